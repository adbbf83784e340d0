"""Verification of near-duplicate candidate pairs (``[dedup.rules.links] verify``), written once for
the in-memory reference and the Spark job: both build a table of candidate LINKS with the packed ORB
keypoints of both ends (``features_a``, ``features_b``) and call :func:`verify_links` on it.

With ``verify`` on, ``max_distance`` is the *candidate* distance: a pair whose keys (with windows) are
within ``verify_link_distance`` is linked unverified, one within ``max_distance`` only when
filters.dedup.pair_verify.verify_pair verifies it. With ``[dedup.rules.keys] occlusion_windows`` also the pairs whose
occlusion window keys are within ``occlusion_distance`` of each other (window against window,
:func:`occlusion_links`) are candidates; they are never linked unverified.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.imagehash.keypoints import unpack_features
from filters.dedup.bands import near_pairs
from filters.dedup.hashes import popcount_xor
from filters.dedup.rules import LinkRules
from filters.dedup.tables import CANDIDATE_LINKS_SCHEMA, LINKS_SCHEMA, VERIFIED_LINKS_SCHEMA
from filters.dedup.pair_verify import VerifyRules, verify_pair


def verify_rules(links: LinkRules) -> VerifyRules:
    return VerifyRules(
        link_distance=links.verify_link_distance,
        candidate_distance=links.max_distance,
        min_inliers=links.verify_min_inliers,
        min_cells=links.verify_min_cells,
        photometric=links.verify_photometric,
        min_agreement=links.verify_min_agreement,
    )


def needs_verdict(distance: int, occlusion: bool, links: LinkRules) -> bool:
    """Whether a pair needs a verdict: an occlusion candidate, or keys farther apart than verify_link_distance
    (the others are linked unverified)."""
    return occlusion or distance > links.verify_link_distance


def verify_links(candidates: pa.Table, links: LinkRules) -> pa.Table:
    """VERIFIED_LINKS rows of the candidate links that the linking rule keeps: key distance within
    ``verify_link_distance`` (inliers, cells, agreement null), or verified (inliers, cells, and agreement when
    the pixels verified it: the verdict). Input:
    CANDIDATE_LINKS rows (a, b, distance, window, occluded, features_a, features_b); an end without
    features (a row hashed with verify off) never verifies."""
    vr = verify_rules(links)
    cols = [candidates.column(c).to_pylist() for c in ("distance", "occluded", "features_a", "features_b")]
    keep, inliers, cells, agreement = [], [], [], []
    for d, occ, fa, fb in zip(*cols):
        v = None
        if needs_verdict(d, occ, links) and fa and fb:
            v = verify_pair(unpack_features(fa), unpack_features(fb), vr)
        verified = v is not None and v.verified(vr)
        keep.append(not needs_verdict(d, occ, links) or verified)
        inliers.append(v.inliers if v else None)
        cells.append(v.cells if v else None)
        agreement.append(v.agreement if verified else None)
    out = candidates.select(["a", "b", "distance", "window", "occluded"])
    out = out.append_column("inliers", pa.array(inliers, pa.int32())).append_column("cells", pa.array(cells, pa.int32()))
    out = out.append_column("agreement", pa.array(agreement, pa.float32()))
    return out.filter(pa.array(keep, pa.bool_())).cast(VERIFIED_LINKS_SCHEMA)


def occlusion_links(keys: np.ndarray, occlusion: list[list[int] | None], distance: int, bands: int = 0) -> pa.Table:
    """LINKS-like rows (a < b row keys, distance = their keys' distance, window false) of rows that have
    an occlusion window key within ``distance`` of one of the other's (a banded self-join over the
    distinct window keys, plus the rows sharing one)."""
    owner: dict[int, set[int]] = {}
    for key, wins in zip(np.asarray(keys, np.int64).tolist(), occlusion):
        for w in wins or []:
            owner.setdefault(w, set()).add(key)
    edges: set[tuple[int, int]] = set()
    for rows in owner.values():  # the same window key in several rows
        ordered = sorted(rows)
        edges.update((x, y) for i, x in enumerate(ordered) for y in ordered[i + 1 :])
    if owner:
        pairs = near_pairs(np.array(list(owner), np.int64), distance, bands)
        for wa, wb in zip(pairs.column("a").to_pylist(), pairs.column("b").to_pylist()):
            edges.update((min(x, y), max(x, y)) for x in owner[wa] for y in owner[wb] if x != y)
    ordered = sorted(edges)
    a = np.array([e[0] for e in ordered], np.int64)
    b = np.array([e[1] for e in ordered], np.int64)
    return pa.table(
        {"a": a, "b": b, "distance": pa.array(popcount_xor(a.copy(), b.copy()), pa.int32()), "window": np.zeros(len(a), bool)},
        schema=LINKS_SCHEMA,
    )


def with_occlusion(links: pa.Table, occluded: pa.Table) -> pa.Table:
    """LINKS plus ``occluded`` (bool): the key / window links, then the occlusion pairs they lack."""
    seen = set(zip(links.column("a").to_pylist(), links.column("b").to_pylist()))
    extra = occluded.filter(pa.array([(x, y) not in seen for x, y in zip(occluded.column("a").to_pylist(), occluded.column("b").to_pylist())], pa.bool_()))
    return pa.concat_tables(
        [
            links.append_column("occluded", pa.array(np.zeros(links.num_rows, bool))),
            extra.append_column("occluded", pa.array(np.ones(extra.num_rows, bool))),
        ]
    )


def with_features(links: pa.Table, keys: pa.Table) -> pa.Table:
    """CANDIDATE_LINKS: ``links`` (with or without ``occlusion``) and the features of both ends, by key
    (after the exact steps one KEYS row per key)."""
    if "occluded" not in links.column_names:
        links = links.append_column("occluded", pa.array(np.zeros(links.num_rows, bool)))
    by_key = dict(zip(keys.column("phash").to_pylist(), keys.column("features").to_pylist()))
    for end in ("a", "b"):
        links = links.append_column(f"features_{end}", pa.array([by_key.get(k) for k in links.column(end).to_pylist()], pa.binary()))
    return links.cast(CANDIDATE_LINKS_SCHEMA)
