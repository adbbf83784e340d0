"""Dedup decisions on perceptual hashes, as pure functions over Arrow tables and numpy arrays.

The steps, in the order the ``dedup`` stage applies them (each one sees only the rows the previous
ones kept):

1. ``eval_set_match``: the row's pHash is within ``max_distance`` of a hash of an evaluation set
   (decontamination). Every such row goes, duplicates included; detail = the set, the matched hash and
   the distance (the closest match; ties broken by set name, then hash).
2. ``duplicate_pair``: same pHash and same normalised text (:func:`text_key`) as a kept row.
3. ``duplicate_phash``: same pHash as a kept row.
4. ``near_duplicate``: pHash within ``max_distance`` (> 0) of another kept row's, transitively: rows
   are grouped by connected components of the "within k" graph, one row kept per component.

**The kept row** of a group is the first by :data:`PREFERENCE`: largest original image (width x
height), then lowest uid (then lowest input shard and position, which only matter for repeated uids).
Rejected rows carry in ``detail`` the uid of the row kept at that step (a later step may remove that row
in turn, with its own reason and detail: follow the chain to the row that stays). The choice depends
only on the rows, never on their order or partitioning.

**Banded join** (near duplicates and the blocklist, never all pairs): the 64 bits are cut into ``m``
blocks; two hashes within distance k differ in at most k blocks, so they agree on at least ``r = m - k``
blocks (pigeonhole). Each hash is emitted once per r-subset of blocks ("table") with the concatenation
of those blocks as key; hashes sharing a (table, key) are candidates, verified with popcount(xor) <= k.
With m = k + 1 (r = 1) this is the plain "k + 1 bands, one equal band" join. Keys of only 64/(k+1) bits
collide more and more as the input grows (k = 4: 13-bit keys, ~300 M candidates for 1 M hashes, growing
with the square of the input), so ``bands = 0`` picks the m in k+1..k+8 with the lowest estimated cost
(rows emitted + CANDIDATE_COST x expected candidates): k + 1 bands for small inputs, and for k = 4 from
~300 k hashes on m = 6 (15 tables, 20-22-bit keys). Recall stays 100 % for every m.

**Keys**: the blocklist step compares imagehash pHashes (``phash``, what hash lists hold); the
duplicate and near-duplicate steps use ``rules.key``: ``phash`` or ``robust`` (curation.hashing's
dihedral-invariant key of the EXIF-upright, alpha-composited image; both are in KEYS). Blank or
near-uniform images share few distinct hashes (``jimagehash-White.jpg``'s pHash is 8000000000000000):
the stage rejects them as ``blank_image`` before any of these steps, or with ``reject_blank`` off keeps
them out of every step (``blank`` column), so they are never grouped with each other.

**Crop windows** (``crop_windows``, robust key only): each row also carries the keys of twenty crop
windows of its image (curation.hashing.WINDOW_SCALES); with ``aspect_windows`` also 36 windows that
keep one axis whole (one-side strip crops, crops to another aspect ratio), and with ``trim_borders`` the
key of the picture inside letterbox / pillarbox bars when it has some (curation.hashing.trimmed_thumbnail). The near-duplicate step then links two rows
when one's key is within k of the other's key *or of one of its window keys* (a cropped copy's key is
close to the original's matching window); window keys are never compared with each other. A
near_duplicate row's detail names the kept uid, then the row's closest link: which key, whether through
a window, the distance and the other key (``KEPT robust-window distance=3 to 0f3c...``).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import CurationError
from curation.hashing import PhashMode
from schemas import Column, Reason, Table

MAX_DISTANCE_LIMIT = 16  # beyond this a 64-bit pHash says little and the banded join degenerates
MAX_TABLES = 512
SMALL_RUN = 64  # (table, key) runs up to this size pair up by offsets; larger ones one by one
# Cost of a candidate pair relative to an emitted (band, key) row: candidates are paired and verified in
# numpy inside a task, rows cross Arrow and the shuffle. Measured ~0.013 on local[2] (bench/neardup.py,
# 1M uniform hashes, k = 4); 0.1 leaves room for real pHashes, which collide far more than uniform ones.
CANDIDATE_COST = 0.1

# Sort order that picks the kept row of a group: first wins.
PREFERENCE = [("pixels", "descending"), ("uid", "ascending"), ("shard", "ascending"), ("row", "ascending")]

# Work tables of the dedup stage (internal: never a stage's output).
KEYS = Table(
    "dedup_keys",
    (
        Column("shard", "int32", False, "position of the input file in the stage's input list"),
        Column("row", "int64", False, "position of the row in its input file"),
        Column("uid", "string", False),
        Column("phash", "int64", False, "the 16-hex pHash as a signed 64-bit integer (same bits)"),
        Column("text_key", "string", False, "md5 of the normalised text (text_key()): short to shuffle"),
        Column("pixels", "int64", False, "original width * height, 0 when unknown"),
        Column("robust", "int64", True, "the robust dedup key (curation.hashing.keys_many), same encoding; null when blank"),
        Column("blank", "bool", True, "blank / low-information image kept (reject_blank off): never used as a dedup key"),
        Column("windows", "list<int64>", True, "robust keys of the image's crop windows (curation.hashing); null when blank"),
    ),
)
KEY_COLUMNS = tuple(KEYS.names)
KEYS_SCHEMA = KEYS.arrow_schema()
DECISIONS = Table(
    "dedup_decisions",
    (
        Column("shard", "int32", False),
        Column("row", "int64", False),
        Column("uid", "string", False),
        Column("reason", "string", False, "a Reason value"),
        Column("detail", "string", True, "kept uid, or the matched evaluation set"),
    ),
)
DECISIONS_SCHEMA = DECISIONS.arrow_schema()
# KEYS rows with a decision: reason null = still kept (one pass yields both kinds).
KEYS_DECIDED = KEYS.extend("dedup_keys_decided", Column("reason", "string"), Column("detail", "string"))
BANDS = Table(
    "dedup_bands",
    (
        Column("band", "int32", False, "table index: which subset of blocks the key is made of"),
        Column("key", "int64", False),
        Column("hash", "int64", False),
        Column("side", "int32", False, "0 = the rows' hashes, 1 = the blocklist's"),
    ),
)
PAIRS = Table(
    "dedup_pairs",
    (Column("a", "int64", False), Column("b", "int64", False), Column("distance", "int32", False)),
)
PAIRS_SCHEMA = PAIRS.arrow_schema()
LINKS = PAIRS.extend("dedup_links", Column("window", "bool", False, "the link is a key within distance of a crop window key"))
LINKS_SCHEMA = LINKS.arrow_schema()
NODE_LINKS = Table(
    "dedup_node_links",
    (
        Column("node", "int64", False, "a dedup key"),
        Column("other", "int64", False, "the key it is closest linked to"),
        Column("distance", "int32", False),
        Column("window", "bool", False),
    ),
)
NODE_LINKS_SCHEMA = NODE_LINKS.arrow_schema()
BLOCKLIST = Table("dedup_blocklist", (Column("hash", "int64", False), Column("set_name", "string", False)))
MATCHES = Table("dedup_matches", (Column("phash", "int64", False), Column("detail", "string", False)))


DEDUP_KEYS = ("phash", "robust")


class DedupConfigError(CurationError, ValueError):
    pass


@dataclass(frozen=True)
class DedupRules:
    phash_mode: str = "exact"  # "exact" (= imagehash.phash bit for bit) or "fast" (JPEG draft decoding)
    max_distance: int = 0  # Hamming k for near duplicates and blocklist matches; 0 = near-dup off
    exact: bool = True  # collapse identical pHashes (duplicate_phash)
    pairs: bool = True  # collapse identical (pHash, normalised text) (duplicate_pair)
    bands: int = 0  # blocks of the banded join; 0 = choose by estimated cost (see module doc)
    hash_batch_rows: int = 256  # images decoded per vectorised DCT batch
    key: str = "phash"  # key of the duplicate and near-duplicate steps: "phash" or "robust" (see hashing)
    reject_blank: bool = True  # blank / low-information images rejected as blank_image (else kept, never deduped)
    blank_std: float = 3.0  # blank: std of the alpha-composited 32x32 grayscale below this (0..255 scale)
    blank_min_alpha: float = 0.05  # blank: fewer than this fraction of the pixels visible (alpha > 0)
    crop_windows: bool = True  # robust key: near duplicates also match crop windows (see module doc)
    aspect_windows: bool = False  # with crop_windows: also the 36 aspect windows (one-side strips, other aspect ratios)
    trim_borders: bool = False  # with crop_windows: also the key of the picture inside letterbox / pillarbox bars

    def __post_init__(self) -> None:
        if self.key not in DEDUP_KEYS:
            raise DedupConfigError(f"[dedup.rules] key must be one of {list(DEDUP_KEYS)}, got {self.key!r}")
        if self.blank_std < 0 or not 0.0 <= self.blank_min_alpha <= 1.0:
            raise DedupConfigError("[dedup.rules] blank_std must be >= 0 and blank_min_alpha in 0..1")
        if self.phash_mode not in PhashMode.__members__.values():
            raise DedupConfigError(f"[dedup.rules] phash_mode must be one of {[m.value for m in PhashMode]}, got {self.phash_mode!r}")
        if not 0 <= self.max_distance <= MAX_DISTANCE_LIMIT:
            raise DedupConfigError(f"[dedup.rules] max_distance must be 0..{MAX_DISTANCE_LIMIT}, got {self.max_distance}")
        if self.bands and not self.max_distance < self.bands <= 64:
            raise DedupConfigError(f"[dedup.rules] bands must be 0 (auto) or max_distance+1..64, got {self.bands}")
        if self.hash_batch_rows < 1:
            raise DedupConfigError("[dedup.rules] hash_batch_rows must be >= 1")


# --- keys --------------------------------------------------------------------------------------


def text_key(text: str | None) -> str:
    """Text as compared for (pHash, text) duplicates: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


def phash_to_int64(hashes: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """16-hex pHashes -> int64 bit patterns (vectorised); a value that is not 16 hex digits raises."""
    values = hashes.to_pylist() if isinstance(hashes, (pa.Array, pa.ChunkedArray)) else list(hashes)
    bad = next((h for h in values if not isinstance(h, str) or len(h) != 16), None)
    if bad is not None:
        raise ValueError(f"not a 16-hex pHash: {bad!r}")
    try:
        raw = bytes.fromhex("".join(values))
    except ValueError as e:
        raise ValueError(f"not a 16-hex pHash among {len(values)} values: {e}") from e
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).view(np.int64)


def int64_to_phash(values: np.ndarray) -> list[str]:
    return [f"{v:016x}" for v in np.asarray(values, np.int64).view(np.uint64).tolist()]


def popcount_xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a.view(np.uint64), b.view(np.uint64))).astype(np.int32)


# --- banded join -------------------------------------------------------------------------------


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
    order = np.lexsort((side, hashes, key, band))
    band, key, hashes, side = band[order], key[order], hashes[order], side[order]
    starts = np.concatenate([[True], (band[1:] != band[:-1]) | (key[1:] != key[:-1])])
    group = np.cumsum(starts)
    run_start = np.flatnonzero(starts)
    run_len = np.diff(np.append(run_start, len(group)))
    small = np.repeat(run_len <= SMALL_RUN, run_len)
    found_a, found_b = [], []

    def keep(a, b, sa, sb):
        ok = (sa == 0) & (sb == 1) if cross else (sa == 0) & (sb == 0) & (a != b)
        if cross:  # lexsort put side 0 before side 1 within a run only for equal hashes: orient each pair
            flip = (sa == 1) & (sb == 0)
            a, b = np.where(flip, b, a), np.where(flip, a, b)
            ok = ok | flip
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
    if not cross:
        a, b = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.zeros((0, 2), np.int64)
    return pa.table(
        {
            "a": pa.array(pairs[:, 0], pa.int64()),
            "b": pa.array(pairs[:, 1], pa.int64()),
            "distance": pa.array(popcount_xor(pairs[:, 0].copy(), pairs[:, 1].copy()), pa.int32()),
        },
        schema=PAIRS_SCHEMA,
    )


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


def uses_windows(rules: DedupRules) -> bool:
    return rules.key == "robust" and rules.crop_windows and rules.max_distance > 0


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


def closest_links(links: pa.Table) -> pa.Table:
    """NODE_LINKS: for each key of a link, its closest link (smallest distance, then key-key before
    key-window, then the smallest other key): what the near_duplicate detail reports."""
    both = pa.concat_tables(
        [
            links.select(["a", "b", "distance", "window"]).rename_columns(["node", "other", "distance", "window"]),
            links.select(["b", "a", "distance", "window"]).rename_columns(["node", "other", "distance", "window"]),
        ]
    )
    best = both.sort_by([("node", "ascending"), ("distance", "ascending"), ("window", "ascending"), ("other", "ascending")])
    node = best.column("node").to_numpy()
    first = np.concatenate([[True], node[1:] != node[:-1]]) if len(node) else np.zeros(0, bool)
    return best.filter(pa.array(first)).cast(NODE_LINKS_SCHEMA)


def with_links(keys: pa.Table, node_links: pa.Table) -> pa.Table:
    """``keys`` with the closest link of each row's key (NODE_LINKS: other, distance, window; null when none)."""
    at = pc.index_in(keys.column("phash"), value_set=node_links.column("node"))
    for c in ("other", "distance", "window"):
        keys = keys.append_column(c, pc.take(node_links.column(c), at))
    return keys


def link_detail(kept_uid: str, key: str, distance: int, window: bool, other: int) -> str:
    """near_duplicate detail: the kept uid, then which key and distance linked the row, and to which
    key (e.g. ``u42 robust-window distance=3 to 0f3c...``: the row's robust key is 3 bits from a crop
    window key of the row whose key is 0f3c..., or the other way round)."""
    return f"{kept_uid} {key}{'-window' if window else ''} distance={distance} to {int64_to_phash(np.array([other]))[0]}"


def collapse_components(grouped: pa.Table, key: str) -> pa.Table:
    """KEYS_DECIDED rows dropped by the near-duplicate step, from KEYS rows with ``component`` and their closest link
    (NODE_LINKS columns ``distance``, ``window``, ``other``, null for a row that has no link): one row
    kept per component, the others near_duplicate with :func:`link_detail`."""
    plain = grouped.drop_columns([c for c in ("distance", "window", "other") if c in grouped.column_names])
    _, dropped = collapse_groups(plain, ["component"], Reason.NEAR_DUPLICATE)
    if dropped.num_rows == 0:
        return dropped
    links = {h: (d, w, o) for h, d, w, o in zip(*(grouped.column(c).to_pylist() for c in ("phash", "distance", "window", "other")))}
    details = [
        link_detail(kept, key, *links[h]) if links.get(h, (None,))[0] is not None else kept
        for kept, h in zip(dropped.column("detail").to_pylist(), dropped.column("phash").to_pylist())
    ]
    return dropped.set_column(dropped.column_names.index("detail"), "detail", pa.array(details, pa.string()))


def components(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Connected components of the edges (a[i], b[i]): node -> smallest node of its component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(nodes)
    if n == 0:
        return {}
    ia, ib = inverse[: len(a)], inverse[len(a) :]
    graph = coo_matrix((np.ones(len(ia), np.int8), (ia, ib)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(smallest, labels, nodes)
    return dict(zip(nodes.tolist(), smallest[labels].tolist()))


# --- choosing the kept row of each group ---------------------------------------------------------


def with_decision(keys: pa.Table, reason: Reason | None, detail: pa.Array | pa.ChunkedArray | None = None) -> pa.Table:
    """KEYS_DECIDED rows: ``keys`` with a reason and detail (reason None: kept, both null)."""
    n = keys.num_rows
    reasons = pa.nulls(n, pa.string()) if reason is None else pa.array([str(reason)] * n, pa.string())
    details = pa.nulls(n, pa.string()) if detail is None else detail
    table = keys.select(list(KEY_COLUMNS)).append_column("reason", reasons).append_column("detail", details)
    return table.cast(KEYS_DECIDED.arrow_schema())


def as_decisions(decided: pa.Table) -> pa.Table:
    return decided.select(DECISIONS.names).cast(DECISIONS_SCHEMA)


def collapse_groups(keys: pa.Table, group_by: list[str], reason: Reason) -> tuple[pa.Table, pa.Table]:
    """Keep the first row of each group by PREFERENCE; the others get ``reason`` and the kept uid as
    detail. Returns (kept keys, KEYS_DECIDED rows of the others)."""
    if keys.num_rows == 0:
        return keys, KEYS_DECIDED.empty()
    ordered = keys.sort_by([(c, "ascending") for c in group_by] + PREFERENCE)
    first = np.zeros(ordered.num_rows, bool)
    first[0] = True
    for c in group_by:
        col = ordered.column(c)
        first[1:] |= pc.not_equal(col.slice(1), col.slice(0, ordered.num_rows - 1)).to_numpy(zero_copy_only=False)
    leader = np.maximum.accumulate(np.where(first, np.arange(ordered.num_rows), 0))
    kept_uid = pc.take(ordered.column("uid"), pa.array(leader[~first]))
    dropped = with_decision(ordered.filter(pa.array(~first)), reason, kept_uid)
    return ordered.filter(pa.array(first)), dropped


def collapse_exact(keys: pa.Table, rules: DedupRules) -> tuple[pa.Table, pa.Table]:
    """Steps 2 and 3 on rows that share pHashes (a whole table, or the pHash buckets of a shuffle)."""
    dropped = [KEYS_DECIDED.empty()]
    if rules.pairs:
        keys, d = collapse_groups(keys, ["phash", "text_key"], Reason.DUPLICATE_PAIR)
        dropped.append(d)
    if rules.exact:
        keys, d = collapse_groups(keys, ["phash"], Reason.DUPLICATE_PHASH)
        dropped.append(d)
    return keys, pa.concat_tables(dropped)


def closest_matches(matched: pa.Table) -> pa.Table:
    """MATCHES rows from (a = row hash, b = listed hash, distance, set_name) pairs: the closest entry
    per row hash, ties broken by set name, then hash; detail = "SET HASH distance=D"."""
    best = matched.sort_by([("a", "ascending"), ("distance", "ascending"), ("set_name", "ascending"), ("b", "ascending")])
    a = best.column("a").to_numpy()
    first = np.concatenate([[True], a[1:] != a[:-1]]) if len(a) else np.zeros(0, bool)
    best = best.filter(pa.array(first))
    details = [
        f"{s} {h} distance={d}"
        for s, h, d in zip(
            best.column("set_name").to_pylist(),
            int64_to_phash(best.column("b").to_numpy()),
            best.column("distance").to_pylist(),
        )
    ]
    return pa.table({"phash": best.column("a"), "detail": pa.array(details, pa.string())}, schema=MATCHES.arrow_schema())


def eval_matches(pairs: pa.Table, blocklist: pa.Table) -> pa.Table:
    """closest_matches of blocklist pairs; ``blocklist`` is a BLOCKLIST table (hash, set_name)."""
    return closest_matches(pairs.join(blocklist.rename_columns(["b", "set_name"]), "b", join_type="inner"))


def reject_matching(keys: pa.Table, matches: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Rows whose phash is in ``matches`` (MATCHES) become eval_set_match; the rest stay."""
    listed = matches.column("phash")  # one row per pHash (closest_matches)
    hit = pc.is_in(keys.column("phash"), value_set=listed)
    dropped = keys.filter(hit)
    detail = pc.take(matches.column("detail"), pc.index_in(dropped.column("phash"), value_set=listed))
    return keys.filter(pc.invert(hit)), with_decision(dropped, Reason.EVAL_SET_MATCH, detail)


def without_blank(keys: pa.Table) -> pa.Table:
    """KEYS rows that may take part in dedup: blank images (kept when reject_blank is off) never do."""
    return keys.filter(pc.invert(pc.fill_null(keys.column("blank"), False)))


def on_key(keys: pa.Table, rules: DedupRules) -> pa.Table:
    """KEYS rows with the configured dedup key in the ``phash`` column (robust: the two swapped), so
    that the duplicate and near-duplicate steps run unchanged on either key."""
    if rules.key == "phash":
        return keys
    if keys.column("robust").null_count:
        raise ValueError("dedup key 'robust' but some non-blank rows have no robust key (hashed by an older version?)")
    return keys.rename_columns(["robust" if c == "phash" else "phash" if c == "robust" else c for c in keys.column_names]).select(
        list(KEY_COLUMNS)
    )


def decide(keys: pa.Table, rules: DedupRules, blocklist: pa.Table | None = None) -> pa.Table:
    """Every step on one in-memory table of KEYS rows: the reference the Spark job must equal.
    Returns DECISIONS rows (the rejected rows only), sorted by (shard, row). Blank rows take no part;
    the blocklist is matched on pHash (hash lists are imagehash's), the other steps on ``rules.key``."""
    keys = without_blank(keys.cast(KEYS_SCHEMA))
    dropped = []
    if blocklist is not None and blocklist.num_rows:
        listed = blocklist.column("hash").to_numpy()
        pairs = blocklist_pairs(keys.column("phash").to_numpy(), listed, rules.max_distance, rules.bands)
        keys, d = reject_matching(keys, eval_matches(pairs, blocklist))
        dropped.append(d)
    keys = on_key(keys, rules)
    keys, d = collapse_exact(keys, rules)
    dropped.append(d)
    if rules.max_distance > 0 and keys.num_rows:
        hashes = keys.column("phash").to_numpy()
        if uses_windows(rules):
            links = window_pairs(hashes, keys.column("windows").to_pylist(), rules.max_distance, rules.bands)
        else:
            links = as_links(near_pairs(hashes, rules.max_distance, rules.bands))
        label = components(links.column("a").to_numpy(), links.column("b").to_numpy())
        labels = [label.get(h, h) for h in keys.column("phash").to_pylist()]
        grouped = keys.append_column("component", pa.array(labels, pa.int64()))
        grouped = with_links(grouped, closest_links(links))
        dropped.append(collapse_components(grouped, rules.key))
    return as_decisions(pa.concat_tables(dropped)).sort_by([("shard", "ascending"), ("row", "ascending")])
