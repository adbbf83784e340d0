"""The safety lists of a run, loaded once per process and applied by the download stage.

:func:`load_screen` reads each ``[[safety.lists]]`` file through curation/storage.py and keeps the parsed
lookup in a per-process cache keyed by the list's kind, path, size and modification time, so each executor
process reads a list once however many tasks it runs (and reads it again when the file changes). The
:class:`Screen` answers, for a batch of URLs before any request and for one body as soon as it has arrived,
which list (if any) matches; the rejection it gives names the list and its kind, never the URL or a hash.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from curation import storage
from curation.errors import ConfigError
from curation.storage import StorageOptions
from filters.safety import (
    DIGEST_BYTES, IMAGE_KINDS, PDQ, URL_KINDS, ExactSet, HashListError, PdqSet, SafetyList, SafetyOptions, algorithm,
    parse_hashes, pdq_hash, url_digests,
)
from schemas import Reason, Rejection

log = logging.getLogger(__name__)

_CACHE: dict[tuple, ExactSet | PdqSet] = {}
_LOCK = threading.Lock()  # a task's fetch threads share one load


def load_list(entry: SafetyList, options: StorageOptions | None = None) -> ExactSet | PdqSet:
    """The lookup of one list, from this process's cache when the file has not changed."""
    size, mtime = storage.file_version(entry.path, options)
    key = (entry.kind, entry.path, size, mtime)
    with _LOCK:
        if key not in _CACHE:
            try:
                rows = parse_hashes(storage.read_bytes(entry.path, options), entry.width)
            except HashListError as e:
                raise ConfigError(f"safety list {entry.name!r} ({entry.path}): {e}") from None
            _CACHE[key] = PdqSet(rows) if entry.kind == PDQ else ExactSet(rows)
            log.info("safety list %s (%s): %d entries, %d bytes", entry.name, entry.kind, len(_CACHE[key]), _CACHE[key].nbytes)
        return _CACHE[key]


@dataclass
class Screen:
    """The lists of one run, loaded: URL lists, image digest lists and PDQ lists."""

    urls: list[tuple[SafetyList, ExactSet]] = field(default_factory=list)
    images: list[tuple[SafetyList, ExactSet]] = field(default_factory=list)
    pdq: list[tuple[SafetyList, PdqSet]] = field(default_factory=list)

    @property
    def image_algorithms(self) -> tuple[str, ...]:
        return tuple(sorted({IMAGE_KINDS[s.kind] for s, _ in self.images}))

    def check_urls(self, urls: list[str]) -> list[Rejection | None]:
        """Per URL, the rejection of the first URL list that holds it (None: on no list)."""
        verdicts: list[Rejection | None] = [None] * len(urls)
        for entry, lookup in self.urls:
            hits = lookup.contains(url_digests(urls, entry.kind))
            for i in np.flatnonzero(hits):
                verdicts[i] = verdicts[i] or Rejection(Reason.BLOCKLISTED_URL, entry.detail)
        return verdicts

    def check_image(self, data: bytes, digests: dict[str, bytes]) -> Rejection | None:
        """The rejection of the first image list that matches a body (its ``digests`` computed while it
        streamed in), else None. PDQ lists decode the image for its PDQ hash."""
        for entry, lookup in self.images:
            digest = np.frombuffer(digests[algorithm(entry.kind)], np.uint8).reshape(1, DIGEST_BYTES[algorithm(entry.kind)])
            if lookup.contains(digest)[0]:
                return Rejection(Reason.BLOCKLISTED_IMAGE, entry.detail)
        if self.pdq:
            hashed = pdq_hash(data)
            if hashed is not None:
                query = np.frombuffer(hashed[0], np.uint8).reshape(1, -1)
                for entry, lookup in self.pdq:
                    if lookup.within(query, entry.distance)[0]:
                        return Rejection(Reason.BLOCKLISTED_IMAGE, entry.detail)
        return None


def load_screen(safety: SafetyOptions, options: StorageOptions | None = None) -> Screen:
    """Every list of ``safety``, loaded (cached per process)."""
    screen = Screen()
    if safety.of_kinds((PDQ,)):
        _require_pdqhash()
    for entry in safety.lists:
        lookup = load_list(entry, options)
        if entry.kind in URL_KINDS:
            screen.urls.append((entry, lookup))
        elif entry.kind in IMAGE_KINDS:
            screen.images.append((entry, lookup))
        else:
            screen.pdq.append((entry, lookup))
    return screen


def _require_pdqhash() -> None:
    try:
        import pdqhash  # noqa: F401
    except ImportError:
        raise ConfigError(
            "a pdq safety list needs the pdqhash package (pip install -e '.[safety]', i.e. pdqhash==0.2.8; "
            "it builds with a C++ compiler)"
        ) from None


def check_lists(safety: SafetyOptions, options: StorageOptions | None = None) -> dict[str, int]:
    """Load every list on the driver (a missing or malformed file stops the run before any fetch);
    entries per list name."""
    return {entry.name: len(load_list(entry, options)) for entry in safety.lists}
