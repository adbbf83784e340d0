"""Dedup decisions on perceptual hashes, as pure functions over Arrow tables and numpy arrays.

One module per step of the work: ``rules`` (DedupRules: a named mode, KeyRules, LinkRules), ``tables`` (work-table schemas, PREFERENCE),
``hashes`` (pHash encodings, text key), ``bands`` (the banded join), ``grouping`` (components, kept
rows, decisions), ``verify`` (occlusion candidates and keypoint verification of candidate pairs), ``steps`` (the step
order and the key choice, shared by the reference and the Spark job) and ``reference`` (every step on one in-memory table). This package re-exports their public names.

The steps, in the order the ``dedup`` stage applies them (each one sees only the rows the previous
ones kept):

1. ``eval_set_match``: the row's pHash is within ``links.max_distance`` of a hash of an evaluation set
   (decontamination). Every such row goes, duplicates included; detail = the set, the matched hash and
   the distance (the closest match; ties broken by set name, then hash).
2. ``duplicate_pair``: same pHash and same normalised text (:func:`text_key`) as a kept row.
3. ``duplicate_phash``: same pHash as a kept row.
4. ``near_duplicate``: pHash within ``links.max_distance`` (> 0) of another kept row's, transitively: rows
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
with the square of the input), so ``links.bands = 0`` picks the m in k+1..k+8 with the lowest estimated cost
(rows emitted + CANDIDATE_COST x expected candidates): k + 1 bands for small inputs, and for k = 4 from
~300 k hashes on m = 6 (15 tables, 20-22-bit keys). Recall stays 100 % for every m.

**Keys**: the blocklist step compares imagehash pHashes (``phash``, what hash lists hold); the
duplicate and near-duplicate steps use ``rules.keys.key``: ``phash`` or ``robust`` (curation.imagehash's
dihedral-invariant key of the EXIF-upright, alpha-composited image; both are in KEYS). Blank or
near-uniform images share few distinct hashes (``jimagehash-White.jpg``'s pHash is 8000000000000000):
the stage rejects them as ``blank_image`` before any of these steps, or with ``keys.reject_blank`` off keeps
them out of every step (``blank`` column), so they are never grouped with each other.

**Crop windows** (``keys.crop_windows``, robust key only): each row also carries the keys of twenty crop
windows of its image (curation.imagehash.WINDOW_SCALES); with ``aspect_windows`` also 36 windows that
keep one axis whole (one-side strip crops, crops to another aspect ratio), and with ``trim_borders`` the
key of the picture inside letterbox / pillarbox bars when it has some (curation.imagehash.trimmed_thumbnail). The near-duplicate step then links two rows
when one's key is within k of the other's key *or of one of its window keys* (a cropped copy's key is
close to the original's matching window); window keys are never compared with each other. A
near_duplicate row's detail names the kept uid, then the row's closest link: which key, whether through
a window, the distance and the other key (``KEPT robust-window distance=3 to 0f3c...``).

**Verified links** (robust key; ``verify`` module; the ``verified`` mode): ``keys.rotation_windows`` and
``keys.deep_windows`` add more window keys (curation.imagehash.windows), matched like the crop windows. With
``links.verify`` the links of step 4 are candidates: those within ``links.verify_link_distance`` stay linked, the others only when
filters.dedup.pair_verify.verify_pair verifies the pair's ORB keypoints (KEYS ``features``);
``keys.occlusion_windows`` adds the pairs whose occlusion window keys (KEYS ``occlusion``) are within
``links.occlusion_distance`` of each other, verified always. :func:`filters.dedup.steps.run_steps` orders these
sub-steps for both engines (near links, occlusion links, verification, components); the detail of a
verified link adds ``verified inliers=N cells=M``, one through occlusion windows says ``robust-occlusion``.
"""

from __future__ import annotations

from filters.dedup.rules import (  # noqa: F401
    MAX_DISTANCE_LIMIT,
    DEDUP_KEYS,
    DedupConfigError,
    MODES,
    DedupRules,
    KeyRules,
    LinkRules,
    uses_windows,
)
from filters.dedup.tables import (  # noqa: F401
    PREFERENCE,
    KEYS,
    KEY_COLUMNS,
    KEYS_SCHEMA,
    DECISIONS,
    DECISIONS_SCHEMA,
    KEYS_DECIDED,
    BANDS,
    PAIRS,
    PAIRS_SCHEMA,
    LINKS,
    LINKS_SCHEMA,
    NODE_LINKS,
    NODE_LINKS_SCHEMA,
    CANDIDATE_LINKS,
    CANDIDATE_LINKS_SCHEMA,
    VERIFIED_LINKS,
    VERIFIED_LINKS_SCHEMA,
    VERDICT_COLUMNS,
    BLOCKLIST,
    MATCHES,
)
from filters.dedup.hashes import (  # noqa: F401
    text_key,
    phash_to_int64,
    int64_to_phash,
    popcount_xor,
)
from filters.dedup.bands import (  # noqa: F401
    MAX_TABLES,
    SMALL_RUN,
    CANDIDATE_COST,
    BandPlan,
    plan_bands,
    band_keys,
    explode_bands,
    candidate_pairs,
    near_pairs,
    blocklist_pairs,
    window_pairs,
    as_links,
)
from filters.dedup.grouping import (  # noqa: F401
    components,
    closest_links,
    with_links,
    LINK_DETAIL,
    link_detail,
    collapse_components,
    with_decision,
    as_decisions,
    collapse_groups,
    collapse_exact,
    closest_matches,
    eval_matches,
    reject_matching,
)
from filters.dedup.verify import (  # noqa: F401
    verify_rules,
    needs_verdict,
    verify_links,
    occlusion_links,
    with_occlusion,
    with_features,
)
from filters.dedup.steps import (  # noqa: F401
    Steps,
    key_swap,
    run_steps,
)
from filters.dedup.reference import (  # noqa: F401
    InMemorySteps,
    decide,
)

__all__ = [
    "MAX_DISTANCE_LIMIT",
    "DEDUP_KEYS",
    "DedupConfigError",
    "MODES",
    "DedupRules",
    "KeyRules",
    "LinkRules",
    "uses_windows",
    "PREFERENCE",
    "KEYS",
    "KEY_COLUMNS",
    "KEYS_SCHEMA",
    "DECISIONS",
    "DECISIONS_SCHEMA",
    "KEYS_DECIDED",
    "BANDS",
    "PAIRS",
    "PAIRS_SCHEMA",
    "LINKS",
    "LINKS_SCHEMA",
    "NODE_LINKS",
    "NODE_LINKS_SCHEMA",
    "CANDIDATE_LINKS",
    "CANDIDATE_LINKS_SCHEMA",
    "VERIFIED_LINKS",
    "VERIFIED_LINKS_SCHEMA",
    "VERDICT_COLUMNS",
    "BLOCKLIST",
    "MATCHES",
    "text_key",
    "phash_to_int64",
    "int64_to_phash",
    "popcount_xor",
    "MAX_TABLES",
    "SMALL_RUN",
    "CANDIDATE_COST",
    "BandPlan",
    "plan_bands",
    "band_keys",
    "explode_bands",
    "candidate_pairs",
    "near_pairs",
    "blocklist_pairs",
    "window_pairs",
    "as_links",
    "components",
    "closest_links",
    "with_links",
    "LINK_DETAIL",
    "link_detail",
    "collapse_components",
    "with_decision",
    "as_decisions",
    "collapse_groups",
    "collapse_exact",
    "closest_matches",
    "eval_matches",
    "reject_matching",
    "verify_rules",
    "needs_verdict",
    "verify_links",
    "occlusion_links",
    "with_occlusion",
    "with_features",
    "Steps",
    "key_swap",
    "run_steps",
    "InMemorySteps",
    "decide",
]
