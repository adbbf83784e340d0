"""The banded join (near duplicates and the blocklist, never all pairs): see filters.dedup's docstring."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa

from filters.dedup.hashes import popcount_xor
from filters.dedup.tables import LINKS_SCHEMA, PAIRS_SCHEMA

MAX_TABLES = 512
SMALL_RUN = 64  # (table, key) runs up to this size pair up by offsets; larger ones one by one
# Cost of a candidate pair relative to an emitted (band, key) row: candidates are paired and verified in
# numpy inside a task, rows cross Arrow and the shuffle. Measured ~0.013 on local[2] (bench/neardup.py,
# 1M uniform hashes, k = 4); 0.1 leaves room for real pHashes, which collide far more than uniform ones.
CANDIDATE_COST = 0.1


@dataclass(frozen=True)
class BandPlan:
    max_distance: int
    blocks: tuple[tuple[int, int], ...]  # (shift, width) of each block, low bits first
    tables: tuple[tuple[int, ...], ...]  # the r-subsets of blocks; one key per table

    @property
    def key_bits(self) -> int:
        return min(sum(self.blocks[i][1] for i in t) for t in self.tables)

    def describe(self) -> dict:
        return {"blocks": len(self.blocks), "tables": len(self.tables), "min_key_bits": self.key_bits}

def _blocks(m: int) -> tuple[tuple[int, int], ...]:
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    shifts = np.concatenate([[0], np.cumsum(widths)[:-1]]).tolist()
    return tuple(zip((int(s) for s in shifts), widths))

def _plan(max_distance: int, m: int) -> BandPlan:
    blocks = _blocks(m)
    return BandPlan(max_distance, blocks, tuple(combinations(range(m), m - max_distance)))

def plan_bands(max_distance: int, n_left: int, n_right: int | None = None, bands: int = 0) -> BandPlan:
    """Blocks and tables for a join of n_left hashes with themselves (n_right None) or with n_right
    others. ``bands`` > 0 forces m; 0 takes the m with the lowest rows-emitted + expected-candidates
    estimate (uniform hashes)."""
    if bands:
        return _plan(max_distance, bands)
    best: tuple[float, BandPlan] | None = None
    for m in range(max_distance + 1, min(64, max_distance + 8) + 1):
        if math.comb(m, m - max_distance) > MAX_TABLES:
            break
        plan = _plan(max_distance, m)
        n_tables = len(plan.tables)
        pairs = n_left * (n_left if n_right is None else n_right) / (2 if n_right is None else 1)
        cost = n_tables * (n_left + (n_right or 0)) + CANDIDATE_COST * n_tables * pairs / 2.0**plan.key_bits
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    return best[1]

def band_keys(hashes: np.ndarray, plan: BandPlan) -> np.ndarray:
    """(N, tables) int64: for each hash and table, the concatenated bits of the table's blocks."""
    h = np.asarray(hashes, np.int64).view(np.uint64)
    out = np.empty((len(h), len(plan.tables)), np.uint64)
    for t, subset in enumerate(plan.tables):
        key = np.zeros(len(h), np.uint64)
        for b in subset:
            shift, width = plan.blocks[b]
            mask = np.uint64((1 << width) - 1)
            key = (key << np.uint64(width)) | ((h >> np.uint64(shift)) & mask)
        out[:, t] = key
    return out.view(np.int64)

def explode_bands(hashes: np.ndarray, plan: BandPlan, side: int = 0) -> pa.Table:
    """One row per (hash, table): table, key, hash, side (0 = rows, 1 = blocklist)."""
    keys = band_keys(hashes, plan)
    n, t = keys.shape
    return pa.table(
        {
            "band": pa.array(np.tile(np.arange(t, dtype=np.int32), n)),
            "key": pa.array(keys.reshape(-1)),
            "hash": pa.array(np.repeat(np.asarray(hashes, np.int64), t)),
            "side": pa.array(np.full(n * t, side, np.int32)),
        }
    )

def _pairs_by_offset(group: np.ndarray, hashes: np.ndarray, side: np.ndarray, max_run: int):
    for d in range(1, max_run):
        same = group[:-d] == group[d:]
        if not same.any():
            break
        i = np.flatnonzero(same)
        yield hashes[i], hashes[i + d], side[i], side[i + d]

CROSS_CHUNK = 1 << 20  # side-0 x side-1 pairs checked at once in a cross join (~50 MB of temporaries)


def candidate_pairs(bands: pa.Table, max_distance: int, cross: bool) -> pa.Table:
    """Verified pairs among exploded band rows (any grouping of them that keeps each (band, key)
    together: a Spark partition, or everything). ``cross=False``: pairs of distinct side-0 hashes,
    a < b. ``cross=True``: (side-0 hash a, side-1 hash b). Distinct pairs, distance <= max_distance."""
    if bands.num_rows == 0:
        return PAIRS_SCHEMA.empty_table()
    band = bands.column("band").to_numpy().astype(np.int64)
    key = bands.column("key").to_numpy()
    hashes = bands.column("hash").to_numpy()
    side = bands.column("side").to_numpy()
    if cross:
        a, b = _cross_pairs(band, key, hashes, side, max_distance)
    else:
        a, b = _self_pairs(band, key, hashes, side, max_distance)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    return pa.table(
        {
            "a": pa.array(pairs[:, 0], pa.int64()),
            "b": pa.array(pairs[:, 1], pa.int64()),
            "distance": pa.array(popcount_xor(pairs[:, 0].copy(), pairs[:, 1].copy()), pa.int32()),
        },
        schema=PAIRS_SCHEMA,
    )


def _self_pairs(band, key, hashes, side, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), a < b, of the side-0 hashes sharing a (band, key) run, within max_distance."""
    order = np.lexsort((side, hashes, key, band))
    band, key, hashes, side = band[order], key[order], hashes[order], side[order]
    starts = np.concatenate([[True], (band[1:] != band[:-1]) | (key[1:] != key[:-1])])
    group = np.cumsum(starts)
    run_start = np.flatnonzero(starts)
    run_len = np.diff(np.append(run_start, len(group)))
    small = np.repeat(run_len <= SMALL_RUN, run_len)
    found_a, found_b = [], []

    def keep(a, b, sa, sb):
        ok = (sa == 0) & (sb == 0) & (a != b)
        a, b = a[ok], b[ok]
        close = popcount_xor(a, b) <= max_distance
        found_a.append(a[close])
        found_b.append(b[close])

    idx = np.flatnonzero(small)
    for a, b, sa, sb in _pairs_by_offset(group[idx], hashes[idx], side[idx], min(SMALL_RUN, int(run_len.max()))):
        keep(a, b, sa, sb)
    for s, n in zip(run_start[run_len > SMALL_RUN], run_len[run_len > SMALL_RUN]):
        i, j = np.triu_indices(int(n), 1)
        keep(hashes[s + i], hashes[s + j], side[s + i], side[s + j])
    a = np.concatenate(found_a) if found_a else np.zeros(0, np.int64)
    b = np.concatenate(found_b) if found_b else np.zeros(0, np.int64)
    return np.minimum(a, b), np.maximum(a, b)


def _cross_pairs(band, key, hashes, side, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(side-0 hash, side-1 hash) sharing a (band, key) run, within max_distance. Only the n0 x n1
    cross pairs of each run are checked, never the pairs within one side: a window join's right side
    (every window key) is ~100x its left (the row keys), and its runs are mostly right-side rows."""
    order = np.lexsort((hashes, side, key, band))  # each run: its side-0 rows, then its side-1 rows
    band, key, hashes, side = band[order], key[order], hashes[order], side[order]
    starts = np.flatnonzero(np.concatenate([[True], (band[1:] != band[:-1]) | (key[1:] != key[:-1])]))
    ends = np.append(starts[1:], len(band))
    zeros_before = np.concatenate([[0], np.cumsum(side == 0)])  # side-0 rows before each position
    n0 = zeros_before[ends] - zeros_before[starts]
    first_right = starts + n0  # side is sorted within a run: its side-1 rows follow its n0 side-0 rows
    n1 = ends - first_right
    both = (n0 > 0) & (n1 > 0)
    s0, s1, n0, n1 = starts[both], first_right[both], n0[both], n1[both]
    found_a, found_b = [], []

    def check(a: np.ndarray, b: np.ndarray) -> None:
        close = popcount_xor(a, b) <= max_distance
        found_a.append(a[close])
        found_b.append(b[close])

    large = n0 * n1 > CROSS_CHUNK
    for first, left, right, count in zip(s0[large], n0[large], s1[large], n1[large]):  # one run, in blocks of its left rows
        step = max(1, CROSS_CHUNK // int(count))
        for i in range(int(first), int(first + left), step):
            block = hashes[i : min(i + step, int(first + left))]
            check(np.repeat(block, count), np.tile(hashes[right : right + count], len(block)))
    s0, s1, n0, n1 = s0[~large], s1[~large], n0[~large], n1[~large]
    counts = n0 * n1
    total = np.cumsum(counts)
    begin = 0
    while begin < len(counts):  # the other runs, in chunks of at most CROSS_CHUNK pairs
        done = int(total[begin - 1]) if begin else 0
        stop = max(begin + 1, int(np.searchsorted(total, done + CROSS_CHUNK, side="right")))
        c = counts[begin:stop]
        run = np.repeat(np.arange(begin, stop), c)
        k = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        check(hashes[s0[run] + k // n1[run]], hashes[s1[run] + k % n1[run]])
        begin = stop
    a = np.concatenate(found_a) if found_a else np.zeros(0, np.int64)
    b = np.concatenate(found_b) if found_b else np.zeros(0, np.int64)
    return a, b


def near_pairs(hashes: np.ndarray, max_distance: int, bands: int = 0) -> pa.Table:
    """All pairs of distinct hashes within max_distance (the banded join, in one piece)."""
    distinct = np.unique(np.asarray(hashes, np.int64))
    plan = plan_bands(max_distance, len(distinct), bands=bands)
    return candidate_pairs(explode_bands(distinct, plan), max_distance, cross=False)

def blocklist_pairs(hashes: np.ndarray, blocked: np.ndarray, max_distance: int, bands: int = 0) -> pa.Table:
    """(row hash, blocklist hash) pairs within max_distance."""
    rows, listed = np.unique(np.asarray(hashes, np.int64)), np.unique(np.asarray(blocked, np.int64))
    plan = plan_bands(max_distance, len(rows), len(listed), bands=bands)
    both = pa.concat_tables([explode_bands(rows, plan, 0), explode_bands(listed, plan, 1)])
    return candidate_pairs(both, max_distance, cross=True)

def window_pairs(keys: np.ndarray, windows: list[list[int] | None], max_distance: int, bands: int = 0) -> pa.Table:
    """LINKS (a < b, both row keys; distance and window = the closest link) of rows whose keys are within
    max_distance, or where one row's key is within max_distance of a window key of the other row
    (``windows[i]`` belongs to ``keys[i]``); ``window`` says the closest link is a key-window one."""
    owner: dict[int, set[int]] = {}
    for key, wins in zip(np.asarray(keys, np.int64).tolist(), windows):
        for w in [key, *(wins or [])]:
            owner.setdefault(w, set()).add(key)
    cross = blocklist_pairs(np.asarray(keys, np.int64), np.array(list(owner), np.int64), max_distance, bands)
    edges: dict[tuple[int, int], tuple[int, bool]] = {}  # (a, b) -> the closest (distance, window) linking them
    for a, b, d in zip(*(cross.column(c).to_pylist() for c in ("a", "b", "distance"))):
        for o in owner[b] - {a}:
            edge = (min(a, o), max(a, o))
            link = (d, b != o)  # b is o's own key, or one of its windows
            edges[edge] = min(link, edges.get(edge, link))
    ordered = sorted(edges)
    return pa.table(
        {
            "a": [a for a, _ in ordered],
            "b": [b for _, b in ordered],
            "distance": [edges[e][0] for e in ordered],
            "window": [edges[e][1] for e in ordered],
        },
        schema=LINKS_SCHEMA,
    )

def as_links(pairs: pa.Table) -> pa.Table:
    """LINKS rows of key-key PAIRS (window false)."""
    return pairs.append_column("window", pa.array(np.zeros(pairs.num_rows, bool))).cast(LINKS_SCHEMA)
