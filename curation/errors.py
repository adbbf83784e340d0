"""The project's one error root.

A :class:`CurationError` is a problem of the user's input, config, paths or environment that a one-line
message explains (the CLI prints it and exits 2, without a traceback). Every other exception is a bug
and keeps its traceback. Subclasses that were ``ValueError``s keep that base too, for callers that
catch it.
"""

from __future__ import annotations


class CurationError(Exception):
    """A problem the user can fix from the message alone."""


class StaleStageError(CurationError):
    """A stage folder was built from (or started on) another version of its input than the one given to this run."""


class IncompleteStageError(CurationError):
    """A stage planned shards whose completion markers the driver cannot read: never marked complete."""


class ClusterPathError(CurationError):
    """A local path that executors on other machines could not see (non-local master, not declared shared)."""


class InputError(CurationError, ValueError):
    """An input that is missing, unfinished, empty, or the output of another stage than the one expected."""


class MissingFileError(InputError, FileNotFoundError):
    """A file the run needs (a model, a list) is not where the config says."""


class ConfigError(CurationError, ValueError):
    """A config value of the wrong type or out of range, an unknown key or stage."""
