"""Work tables of the dedup stage (internal: never a stage's output) and the kept-row preference."""

from __future__ import annotations

from schemas import DETAIL, REASON, UID, Column, Table

# Sort order that picks the kept row of a group: first wins.
PREFERENCE = [("pixels", "descending"), (UID, "ascending"), ("shard", "ascending"), ("row", "ascending")]

# Work tables of the dedup stage (internal: never a stage's output).
KEYS = Table(
    "dedup_keys",
    (
        Column("shard", "int32", False, "position of the input file in the stage's input list"),
        Column("row", "int64", False, "position of the row in its input file"),
        Column(UID, "string", False),
        Column("phash", "int64", False, "the 16-hex pHash as a signed 64-bit integer (same bits)"),
        Column("text_key", "string", False, "md5 of the normalised text (text_key()): short to shuffle"),
        Column("pixels", "int64", False, "original width * height, 0 when unknown"),
        Column("robust", "int64", True, "the robust dedup key (curation.imagehash.keys_many), same encoding; null when blank"),
        Column("blank", "bool", True, "blank / low-information image kept (reject_blank off): never used as a dedup key"),
        Column("windows", "list<int64>", True, "robust keys of the image's crop windows (curation.imagehash); null when blank"),
        Column("features", "binary", True, "packed ORB keypoints (curation.imagehash.keypoints.pack_features); null when blank or verify off"),
        Column("occlusion", "list<int64>", True, "robust keys of the occlusion windows (curation.imagehash.windows); null when blank or off"),
    ),
)
KEY_COLUMNS = tuple(KEYS.names)
KEYS_SCHEMA = KEYS.arrow_schema()
DECISIONS = Table(
    "dedup_decisions",
    (
        Column("shard", "int32", False),
        Column("row", "int64", False),
        Column(UID, "string", False),
        Column(REASON, "string", False, "a Reason value"),
        Column(DETAIL, "string", True, "kept uid, or the matched evaluation set"),
    ),
)
DECISIONS_SCHEMA = DECISIONS.arrow_schema()
# KEYS rows with a decision: reason null = still kept (one pass yields both kinds).
KEYS_DECIDED = KEYS.extend("dedup_keys_decided", Column(REASON, "string"), Column(DETAIL, "string"))
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
# with [dedup.rules.links] verify (filters.dedup.verify): the candidates with both ends' keypoints, and the links kept
_OCCLUSION = Column("occluded", "bool", False, "an occlusion-window candidate (never linked unverified)")
_VERDICT = (
    Column("inliers", "int32", True, "keypoint matches agreeing on one transform; null when linked unverified"),
    Column("cells", "int32", True, "4x4 cells of the pictures holding an agreeing keypoint (the fewer side); null when unverified"),
    Column("agreement", "float32", True, "share of agreeing pixel blocks when verified by the pixels; null otherwise"),
)
VERDICT_COLUMNS = tuple(c.name for c in _VERDICT)  # inliers, cells, agreement
CANDIDATE_LINKS = LINKS.extend(
    "dedup_candidate_links", _OCCLUSION, Column("features_a", "binary", True), Column("features_b", "binary", True)
)
CANDIDATE_LINKS_SCHEMA = CANDIDATE_LINKS.arrow_schema()
VERIFIED_LINKS = LINKS.extend("dedup_verified_links", _OCCLUSION, *_VERDICT)
VERIFIED_LINKS_SCHEMA = VERIFIED_LINKS.arrow_schema()
NODE_LINKS = Table(
    "dedup_node_links",
    (
        Column("node", "int64", False, "a dedup key"),
        Column("other", "int64", False, "the key it is closest linked to"),
        Column("distance", "int32", False),
        Column("window", "bool", False),
        Column("occluded", "bool", True, "found through occlusion windows; null: occlusion_windows off"),
        *_VERDICT,
    ),
)
NODE_LINKS_SCHEMA = NODE_LINKS.arrow_schema()
BLOCKLIST = Table("dedup_blocklist", (Column("hash", "int64", False), Column("set_name", "string", False)))
MATCHES = Table("dedup_matches", (Column("phash", "int64", False), Column(DETAIL, "string", False)))
