"""Grouping: connected components of the verified links, the kept row of each group (PREFERENCE), the
closest evaluation-set match, and the decisions (KEYS_DECIDED / DECISIONS rows) they produce."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.dedup.hashes import int64_to_phash
from filters.dedup.rules import LinkRules
from filters.dedup.tables import DECISIONS, DECISIONS_SCHEMA, KEY_COLUMNS, KEYS_DECIDED, MATCHES, NODE_LINKS_SCHEMA, PREFERENCE, VERDICT_COLUMNS
from schemas import DETAIL, REASON, UID, Reason

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

LINK_DETAIL = ("other", "distance", "window", "occluded", *VERDICT_COLUMNS)  # NODE_LINKS columns a decision reads


def closest_links(links: pa.Table) -> pa.Table:
    """NODE_LINKS: for each key of a link (LINKS, or VERIFIED_LINKS with occlusion and the verdict), its
    closest link (smallest distance, then key-key before key-window, then key / window before occlusion,
    then the smallest other key): what the near_duplicate detail reports."""
    extra = [c for c in ("occluded", *VERDICT_COLUMNS) if c in links.column_names]
    names = ["node", "other", "distance", "window", *extra]
    both = pa.concat_tables(
        [
            links.select(["a", "b", "distance", "window", *extra]).rename_columns(names),
            links.select(["b", "a", "distance", "window", *extra]).rename_columns(names),
        ]
    )
    order = ["node", "distance", "window", *(["occluded"] if extra else []), "other"]
    best = both.sort_by([(c, "ascending") for c in order])
    node = best.column("node").to_numpy()
    first = np.concatenate([[True], node[1:] != node[:-1]]) if len(node) else np.zeros(0, bool)
    best = best.filter(pa.array(first))
    for c in ("occluded", *VERDICT_COLUMNS):
        if c not in best.column_names:
            best = best.append_column(c, pa.nulls(best.num_rows, NODE_LINKS_SCHEMA.field(c).type))
    return best.select(NODE_LINKS_SCHEMA.names).cast(NODE_LINKS_SCHEMA)

def with_links(keys: pa.Table, node_links: pa.Table) -> pa.Table:
    """``keys`` with the closest link of each row's key (NODE_LINKS columns LINK_DETAIL; null when none)."""
    at = pc.index_in(keys.column("phash"), value_set=node_links.column("node"))
    for c in LINK_DETAIL:
        keys = keys.append_column(c, pc.take(node_links.column(c), at))
    return keys

def link_detail(kept_uid: str, key: str, distance: int, window: bool, other: int, occlusion: bool | None = None,
                inliers: int | None = None, cells: int | None = None, agreement: float | None = None) -> str:
    """near_duplicate detail: the kept uid, then which key and distance linked the row, and to which
    key (e.g. ``u42 robust-window distance=3 to 0f3c...``: the row's robust key is 3 bits from a crop
    window key of the row whose key is 0f3c..., or the other way round). A verified link (``verify``)
    adds its verdict (``u42 robust-window distance=7 verified inliers=23 cells=9 to 0f3c...``); one found
    through occlusion windows says ``robust-occlusion`` and gives the distance of the two row keys; one
    verified by its pixels adds their agreement (``verified inliers=7 cells=3 agreement=0.86``)."""
    via = "-occlusion" if occlusion else ("-window" if window else "")
    verdict = f" verified inliers={inliers} cells={cells}" if inliers is not None else ""
    verdict += f" agreement={agreement:.2f}" if agreement is not None else ""
    return f"{kept_uid} {key}{via} distance={distance}{verdict} to {int64_to_phash(np.array([other]))[0]}"

def collapse_components(grouped: pa.Table, key: str) -> pa.Table:
    """KEYS_DECIDED rows dropped by the near-duplicate step, from KEYS rows with ``component`` and their closest link
    (NODE_LINKS columns LINK_DETAIL, null for a row that has no link; occlusion, inliers and cells may be
    absent): one row kept per component, the others near_duplicate with :func:`link_detail`."""
    plain = grouped.drop_columns([c for c in LINK_DETAIL if c in grouped.column_names])
    _, dropped = collapse_groups(plain, ["component"], Reason.NEAR_DUPLICATE)
    if dropped.num_rows == 0:
        return dropped
    n = grouped.num_rows
    cols = [grouped.column(c).to_pylist() if c in grouped.column_names else [None] * n for c in ("distance", "window", "other", "occluded", *VERDICT_COLUMNS)]
    links = dict(zip(grouped.column("phash").to_pylist(), zip(*cols)))
    details = []
    for kept, h in zip(dropped.column(DETAIL).to_pylist(), dropped.column("phash").to_pylist()):
        link = links.get(h)
        details.append(kept if link is None or link[0] is None else link_detail(kept, key, *link))
    return dropped.set_column(dropped.column_names.index(DETAIL), DETAIL, pa.array(details, pa.string()))

def with_decision(keys: pa.Table, reason: Reason | None, detail: pa.Array | pa.ChunkedArray | None = None) -> pa.Table:
    """KEYS_DECIDED rows: ``keys`` with a reason and detail (reason None: kept, both null)."""
    n = keys.num_rows
    reasons = pa.nulls(n, pa.string()) if reason is None else pa.array([str(reason)] * n, pa.string())
    details = pa.nulls(n, pa.string()) if detail is None else detail
    table = keys.select(list(KEY_COLUMNS)).append_column(REASON, reasons).append_column(DETAIL, details)
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
    kept_uid = pc.take(ordered.column(UID), pa.array(leader[~first]))
    dropped = with_decision(ordered.filter(pa.array(~first)), reason, kept_uid)
    return ordered.filter(pa.array(first)), dropped

def collapse_exact(keys: pa.Table, links: LinkRules) -> tuple[pa.Table, pa.Table]:
    """Steps 2 and 3 (``links.pairs``, ``links.exact``) on rows that share pHashes (a whole table, or the
    pHash buckets of a shuffle)."""
    dropped = [KEYS_DECIDED.empty()]
    if links.pairs:
        keys, d = collapse_groups(keys, ["phash", "text_key"], Reason.DUPLICATE_PAIR)
        dropped.append(d)
    if links.exact:
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
    return pa.table({"phash": best.column("a"), DETAIL: pa.array(details, pa.string())}, schema=MATCHES.arrow_schema())

def eval_matches(pairs: pa.Table, blocklist: pa.Table) -> pa.Table:
    """closest_matches of blocklist pairs; ``blocklist`` is a BLOCKLIST table (hash, set_name)."""
    return closest_matches(pairs.join(blocklist.rename_columns(["b", "set_name"]), "b", join_type="inner"))

def reject_matching(keys: pa.Table, matches: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Rows whose phash is in ``matches`` (MATCHES) become eval_set_match; the rest stay."""
    listed = matches.column("phash")  # one row per pHash (closest_matches)
    hit = pc.is_in(keys.column("phash"), value_set=listed)
    dropped = keys.filter(hit)
    detail = pc.take(matches.column(DETAIL), pc.index_in(dropped.column("phash"), value_set=listed))
    return keys.filter(pc.invert(hit)), with_decision(dropped, Reason.EVAL_SET_MATCH, detail)
