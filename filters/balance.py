"""Metadata balancing (MetaCLIP, Xu et al. 2023): substring matching of captions against a list of entries,
and the per-row draw that keeps each entry's rows with probability min(1, t / count).

Matching follows MetaCLIP's ``substr_matching``: the caption is wrapped in spaces, each of ``, . ; : ? ! ```
gets a space on both sides, tab, newline and carriage return become spaces; an entry matches when
``" " + entry + " "`` is a substring of that spaced caption. Case is kept (``Dog`` does not match ``dog``),
nothing else is normalised, and an entry holding one of the spaced marks without spaces around it (``U.S.``)
can never match (the spacing splits it in the caption, not in the entry). One Aho-Corasick automaton (pyahocorasick) finds every entry of
a caption, overlapping ones included, in one pass over it; each entry counts once per caption.

The draw for a (row, entry) pair is a fixed function of (seed, uid, entry), so which rows are kept depends
neither on partitioning nor on retries, and a rerun keeps the same rows. A row is kept when one of its
entries samples it, which happens with probability 1 - prod(1 - p_i) over its entries.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence

import ahocorasick
import numpy as np

from schemas import Reason, Rejection

SPACED_PUNCTUATION = (",", ".", ";", ":", "?", "!", "`")  # a space is put on both sides of each
SPACE_CHARS = ("\t", "\n", "\r")  # each becomes a space
DETAIL_ENTRIES = 3  # balanced_out detail: this many of the row's entries, those with the fewest matches


def spaced_text(text: str) -> str:
    """The caption as MetaCLIP matches it: wrapped in spaces, punctuation spaced apart."""
    spaced = f" {text} "
    for mark in SPACED_PUNCTUATION:
        spaced = spaced.replace(mark, f" {mark} ")
    for char in SPACE_CHARS:
        spaced = spaced.replace(char, " ")
    return spaced


def spaced_entry(entry: str) -> str:
    return f" {entry} "


def can_match(entry: str) -> bool:
    """False for an entry no caption can match: it holds a tab or line break, or one of the spaced
    punctuation marks without a space on both sides (in a spaced caption every one has them)."""
    if any(c in entry for c in SPACE_CHARS):
        return False
    spaced = spaced_entry(entry)
    return all(spaced[i - 1] == " " == spaced[i + 1] for i, c in enumerate(spaced) if c in SPACED_PUNCTUATION)


def parse_entries(data: bytes) -> tuple[str, ...]:
    """Entries from MetaCLIP's metadata.json (a JSON list of strings) or from a text file with one entry
    per line (surrounding whitespace stripped). Empty entries are dropped; a repeated entry is kept once,
    at its first position (the entry id is that position)."""
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("["):
        values = json.loads(text)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("a JSON metadata file must hold one list of strings")
    else:
        values = [line.strip() for line in text.splitlines()]
    return tuple(dict.fromkeys(v for v in values if v and not v.isspace()))


def entries_digest(entries: Sequence[str]) -> str:
    """A digest of the entry list (its content, in order): the cache key of the automaton, part of the
    stage's fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for entry in entries:
        digest.update(entry.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class EntryMatcher:
    """An Aho-Corasick automaton over the spaced entries; ``match`` gives a caption's entry ids."""

    def __init__(self, entries: Sequence[str]):
        self.entries = tuple(entries)
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for entry_id, entry in enumerate(self.entries):
            self._automaton.add_word(spaced_entry(entry), entry_id)
        self._automaton.make_automaton()
        self._empty = not self.entries

    def match(self, text: str | None) -> list[int]:
        """The ids of the entries ``text`` matches, ascending, each once."""
        if not text or self._empty:
            return []
        return sorted({entry_id for _, entry_id in self._automaton.iter(spaced_text(text))})

    def match_many(self, texts: Iterable[str | None]) -> list[list[int]]:
        return [self.match(t) for t in texts]


_MATCHERS: dict[str, EntryMatcher] = {}  # one automaton per process and entry list (executors reuse it)


def matcher_for(entries: Sequence[str], key: str | None = None) -> EntryMatcher:
    """The process's automaton for ``entries`` (``key``: their digest, when the caller has it)."""
    key = key or entries_digest(entries)
    matcher = _MATCHERS.get(key)
    if matcher is None:
        _MATCHERS.clear()  # a worker holds one list at a time: the previous automaton can go
        matcher = _MATCHERS[key] = EntryMatcher(entries)
    return matcher


# --- sampling ----------------------------------------------------------------------------------------


def draw(seed: int, uid: str, entry: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, uid, entry)."""
    digest = hashlib.blake2b(f"{seed}\x1f{uid}\x1f{entry}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def entry_probability(count: int, t: int) -> float:
    """The chance that an entry matched ``count`` times samples one of its rows: min(1, t / count)."""
    return 1.0 if count <= t else t / count


def keep_probability(counts: Iterable[int], t: int) -> float:
    """The chance a row matching entries of these counts is kept: 1 - prod(1 - p_i); 0 without entries."""
    return 1.0 - math.prod(1.0 - entry_probability(c, t) for c in counts)


def is_sampled(seed: int, uid: str, entry_ids: Sequence[int], counts: np.ndarray, entries: Sequence[str], t: int) -> bool:
    """Whether one of the row's entries samples it: draw(seed, uid, entry) < p(entry) for some entry.
    An entry matched at most ``t`` times always does (p = 1), so no draw is computed for it."""
    row_counts = [int(counts[e]) for e in entry_ids]
    if any(c <= t for c in row_counts):
        return True
    return any(draw(seed, uid, entries[e]) < t / c for e, c in zip(entry_ids, row_counts))


def decide(
    seed: int, uid: str, entry_ids: Sequence[int], counts: np.ndarray, entries: Sequence[str], t: int
) -> Rejection | None:
    """None to keep the row, else why it is dropped: no_metadata_match, or balanced_out with the row's
    entries that have the fewest matches (the ones most likely to have kept it)."""
    if not entry_ids:
        return Rejection(Reason.NO_METADATA_MATCH)
    if is_sampled(seed, uid, entry_ids, counts, entries, t):
        return None
    rarest = sorted(entry_ids, key=lambda e: (int(counts[e]), entries[e]))[:DETAIL_ENTRIES]
    named = ", ".join(f"{entries[e]!r} ({int(counts[e]):,})" for e in rarest)
    return Rejection(Reason.BALANCED_OUT, f"fewest matches: {named}; t = {t:,}")


def count_entries(matches: Iterable[Sequence[int]], n_entries: int) -> np.ndarray:
    """Rows per entry over ``matches`` (one list of entry ids per row): the in-memory count."""
    counts = np.zeros(n_entries, np.int64)
    for entry_ids in matches:
        counts[list(entry_ids)] += 1
    return counts


# --- statistics --------------------------------------------------------------------------------------


def log2_histogram(counts: np.ndarray) -> list[dict]:
    """Entries by their number of rows, in powers of two: ``{"min": 2^k, "max": 2^(k+1) - 1, "entries": n}``
    for every k up to the largest count (entries with no row are left out)."""
    counts = np.asarray(counts, np.int64)
    present = counts[counts > 0]
    if present.size == 0:
        return []
    bins = np.bincount(np.floor(np.log2(present)).astype(np.int64))
    return [{"min": 2**k, "max": 2 ** (k + 1) - 1, "entries": int(n)} for k, n in enumerate(bins)]


def largest(counts: np.ndarray, entries: Sequence[str], n: int = 20) -> list[list]:
    """The ``n`` entries with the most rows, as [entry, rows] (ties: the earlier entry first)."""
    counts = np.asarray(counts, np.int64)
    order = np.lexsort((np.arange(counts.size), -counts))[:n]
    return [[entries[i], int(counts[i])] for i in order if counts[i] > 0]
