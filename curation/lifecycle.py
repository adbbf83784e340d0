"""The one lifecycle every stage runs through (engine-agnostic: the work itself is a callable).

    resolve paths on the driver -> list and check the inputs -> fingerprint them
    -> complete with the same fingerprint? return its stats
    -> stale (complete or started on another input)? redo it, or stop naming the stage and the flag
    -> prepare the folder, pin inputs + fingerprint -> work (plans shards, runs tasks)
    -> finalize: every planned shard has a marker the driver can read, accounting holds, _SUCCESS last

A stage's fingerprint is a digest of the exact input it consumed: each input file's name (relative to
their common folder), size and modification time, plus the stage's settings. Rewriting an upstream
shard (a download rerun that recovered transient failures, a hand edit) changes it, so a later stage
built from the older input is never reported as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation import storage
from curation.errors import InputError, StaleStageError
from curation.stage import DATA, INPUTS_FILE, SHARDS, STATS, SUCCESS, InputsChangedError, SettingsChangedError, StageDir
from curation.storage import StorageOptions

log = logging.getLogger(__name__)


class InputNotReadyError(InputError):
    """The input is not a finished stage folder: no _SUCCESS (the stage that writes it did not end)."""


@dataclass(frozen=True)
class StageSpec:
    """What the lifecycle needs to know of a stage: its name, the stage it reads, its input's columns."""

    name: str  # as written in _stats.json ("filter_text")
    upstream: str | tuple[str, ...] | None = None  # the stage(s) whose output it reads (None: crawl files or any parquet)
    input_columns: tuple[str, ...] = ()  # columns every input file must have
    finished_input: bool = True  # a folder input must be a finished stage (data/ alone is not enough)


@dataclass
class Work:
    """What a stage's work returns: the shard names it planned (each must leave a marker) and extra stats."""

    planned: set[str]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """How a stage is being run: by whom (the master), with what resume policy."""

    master: str | None = None  # the Spark master, None without Spark (a local engine)
    overwrite: bool = False  # start again from nothing
    redo_stale: bool = False  # a stage built from another input is redone (else: StaleStageError)


def plan_buckets(n_rows: int, rows_per_shard: int) -> int:
    """How many uid buckets (output shards) ``n_rows`` rows fill at ``rows_per_shard`` each (at least one)."""
    return max(1, math.ceil(n_rows / max(1, rows_per_shard)))


# --- inputs ----------------------------------------------------------------------------------------


def _is_stage_folder(folder: StageDir) -> bool:
    return any(storage.exists(folder.path(p), folder.storage) for p in (SUCCESS, STATS, SHARDS))


def input_files(spec: StageSpec, inputs: Sequence[str], options: StorageOptions = StorageOptions()) -> list[str]:
    """The parquet files a stage reads: a stage folder gives its data/ files (it must be finished and be the
    output of ``spec.upstream``); folders, globs and files give their parquet files. Checked on the driver,
    before anything is written: a missing or unfinished input, one of another stage, or files without the
    stage's input columns end here with an InputError naming the path."""
    files: list[str] = []
    for item in inputs:
        item = storage.absolute(item)
        folder = StageDir(item, "?", options)
        has_data = storage.is_dir(folder.path(DATA), options)
        if has_data and (spec.finished_input or _is_stage_folder(folder)):
            _check_upstream(spec, folder)
            files.extend(folder.files())
        elif spec.finished_input and not storage.exists(item, options):
            raise InputNotReadyError(f"input not found: {item}")
        elif spec.finished_input and storage.is_dir(item, options):
            raise InputNotReadyError(
                f"input {item} is not a stage folder (no data/ and no _SUCCESS); {_reads(spec)}"
            )
        else:
            found = [f for f in storage.expand_inputs([item], options) if f.endswith(".parquet")]
            if not found:
                raise InputError(f"no parquet files in {item}; {_reads(spec)}")
            files.extend(found)
    files = sorted(dict.fromkeys(files))
    if files and spec.input_columns:
        check_columns(spec, files[0], options)
    return files


def upstreams(spec: StageSpec) -> tuple[str, ...]:
    """The stages whose output folder ``spec`` accepts (empty: any parquet)."""
    if spec.upstream is None:
        return ()
    return (spec.upstream,) if isinstance(spec.upstream, str) else spec.upstream


def _reads(spec: StageSpec) -> str:
    names = upstreams(spec)
    if not names:
        return f"{spec.name} reads parquet files"
    return f"{spec.name} reads the output folder of stage {' or '.join(names)}"


def _stands_for(folder: StageDir, made_by: str | None) -> str | None:
    """The stage whose table ``folder`` holds: a stage that writes its input's own table (balance) records
    the stage it read as ``input_stage``, and stands for it."""
    if made_by is None:
        return None
    return folder.stats().get("input_stage") or made_by


def _check_upstream(spec: StageSpec, folder: StageDir) -> None:
    if not folder.is_complete():
        raise InputNotReadyError(
            f"input {folder.uri} has no _SUCCESS: the stage that writes it has not finished (run it first)"
        )
    made_by = folder.stats().get("stage") if storage.exists(folder.path(STATS), folder.storage) else None
    made_by = _stands_for(folder, made_by)
    if upstreams(spec) and made_by and made_by not in upstreams(spec):
        raise InputError(f"input {folder.uri} is the output of stage {made_by}; {_reads(spec)}")


def check_columns(spec: StageSpec, uri: str, options: StorageOptions) -> None:
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        names = pq.read_schema(fh).names
    missing = [c for c in spec.input_columns if c not in names]
    if missing:
        raise InputError(f"input {uri} lacks columns {missing}; {_reads(spec)}")


# --- fingerprints ----------------------------------------------------------------------------------


def _listing(files: Sequence[str], options: StorageOptions) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of each file, from one listing per folder (one LIST request on S3)."""
    by_parent: dict[str, list[str]] = defaultdict(list)
    for f in files:
        by_parent[f.rsplit("/", 1)[0]].append(f)
    found: dict[str, tuple[int, int]] = {}
    for parent, members in by_parent.items():
        fs, path = storage.filesystem(parent, options)
        infos = {i.path: i for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))}
        for f in members:
            info = infos.get(storage.filesystem(f, options)[1])
            found[f] = (info.size, info.mtime_ns or 0) if info is not None else (-1, 0)
    return found


def fingerprint(files: Sequence[str], options: StorageOptions, settings: dict | None = None) -> str:
    """Digest of the files a stage consumes (name under their common folder, size, mtime) and its settings."""
    digest = hashlib.sha256(json.dumps(settings or {}, sort_keys=True, default=str).encode())
    if files:
        bare = [f.split("://", 1)[-1] for f in files]
        common = posixpath.commonpath(bare) if len(bare) > 1 else posixpath.dirname(bare[0])
        infos = _listing(files, options)
        for f, path in zip(files, bare):
            size, mtime = infos[f]
            digest.update(f"{posixpath.relpath(path, common)}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()[:32]


# --- the lifecycle ---------------------------------------------------------------------------------


def _pinned(stage: StageDir) -> dict | None:
    path = stage.path(INPUTS_FILE)
    if not storage.exists(path, stage.storage):
        return None
    pinned = json.loads(storage.read_bytes(path, stage.storage))
    return pinned if isinstance(pinned, dict) else {"files": pinned}


def _stale(stage: StageDir, files: list[str], digest: str, settings: dict | None) -> tuple[str, type] | None:
    """Why the folder cannot be reused as it is, and the error that says so (None: it can be: complete
    and built from this input, or started on it and resumable)."""
    if stage.is_complete():
        if stage.stats().get("input_fingerprint") == digest:
            return None
        return "it was built from another version of its input or settings", StaleStageError
    pinned = _pinned(stage)
    if pinned is None:
        return None
    if pinned.get("files") != files:
        return f"it was started with {len(pinned.get('files') or [])} other input files", InputsChangedError
    if pinned.get("settings", settings) != settings:
        return "it was started with other settings", SettingsChangedError
    if pinned.get("fingerprint", digest) != digest:
        return "its input changed since it was started", StaleStageError
    return None


def run_stage(
    spec: StageSpec,
    stage: StageDir,
    files: list[str],
    work: Callable[[StageDir, list[str]], Work],
    *,
    config: dict,
    context: RunContext,
    settings: dict | None = None,
    rerun_complete: Callable[[StageDir], bool] | None = None,
) -> dict:
    """Run one stage over ``files`` into ``stage`` and return its stats (what _stats.json holds).

    ``work(stage, files)`` plans shards, runs (or skips) their tasks and returns the planned names;
    ``rerun_complete(stage)`` True makes a complete stage run its work again (download's transient
    retries) without discarding it."""
    started = time.time()
    settings = json.loads(json.dumps(settings or {}, sort_keys=True, default=str))  # as the pinned copy reads back
    for uri in (stage.uri, *files):
        storage.check_shared(uri, context.master, stage.storage, f"{spec.name} path")
    digest = fingerprint(files, stage.storage, settings)
    overwrite = context.overwrite
    stale = None if overwrite else _stale(stage, files, digest, settings)
    if stale is not None:
        why, error = stale
        if not context.redo_stale:
            raise error(
                f"{spec.name} at {stage.uri} cannot be reused: {why}; rerun with --overwrite to redo it "
                "(the pipeline redoes stale stages unless [pipeline] redo_stale = false)"
            )
        log.warning("%s at %s: %s; redoing it", spec.name, stage.uri, why)
        overwrite = True
    if stage.is_complete() and not overwrite:
        if rerun_complete is None or not rerun_complete(stage):
            log.info("%s is complete (_SUCCESS present, input unchanged); nothing to do", stage.uri)
            return stage.stats()
        storage.delete(stage.path(SUCCESS), stage.storage)  # shards may change from here on
    stage.prepare(overwrite=overwrite)
    storage.write_bytes_atomic(
        stage.path(INPUTS_FILE), json.dumps({"files": files, "fingerprint": digest, "settings": settings}, default=str).encode(), stage.storage
    )
    done = work(stage, files)
    extra = {**done.extra, "input_fingerprint": digest}
    stats = stage.finalize(config, started, inputs=files, extra=extra, planned=done.planned)
    log.info("%s: %d rows in, %d out, rejected %s", spec.name, stats["rows_in"], stats["rows_out"], stats["rejected"])
    return stats
