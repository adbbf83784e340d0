"""One definition per stage table; pyarrow and Spark schemas are both derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # pyspark is imported lazily: the pure code never needs it
    from pyspark.sql.types import StructType

_ARROW_TYPES = {
    "string": pa.string(),
    "binary": pa.binary(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "list<int64>": pa.list_(pa.int64()),
}


def _spark_type(kind: str):
    from pyspark.sql import types as T

    return {
        "string": T.StringType(),
        "binary": T.BinaryType(),
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
        "bool": T.BooleanType(),
        "list<int64>": T.ArrayType(T.LongType()),
    }[kind]


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # a key of _ARROW_TYPES
    nullable: bool = True
    doc: str = ""
    model: str = ""  # a score column: the MODELS.toml section (a models.registry row) whose scorer fills it
    histogram: bool = False  # the run report draws its distribution

    def __post_init__(self) -> None:
        if self.kind not in _ARROW_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.kind!r}; known: {sorted(_ARROW_TYPES)}")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; columns: {self.names}")

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in self.columns])

    def spark_schema(self) -> StructType:
        from pyspark.sql import types as T

        return T.StructType([T.StructField(c.name, _spark_type(c.kind), c.nullable) for c in self.columns])

    def spark_ddl(self) -> str:
        return self.spark_schema().simpleString()[len("struct<") : -1]

    def extend(self, name: str, *columns: Column) -> Table:
        return Table(name, self.columns + tuple(columns))

    def empty(self) -> pa.Table:
        return self.arrow_schema().empty_table()

    def from_pylist(self, rows: list[dict]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.arrow_schema())

    def conform(self, table: pa.Table) -> pa.Table:
        """Select and cast ``table``'s columns to this schema (clear error if one is missing)."""
        missing = [n for n in self.names if n not in table.column_names]
        if missing:
            raise ValueError(f"table {self.name!r}: input lacks columns {missing}; it has {table.column_names}")
        return table.select(self.names).cast(self.arrow_schema())


# Column names the code refers to by name: written here once, used by the tables below and the code.
UID = "uid"
URL = "url"
TEXT = "text"
STAGE_COLUMN = "stage"
REASON = "reason"
DETAIL = "detail"

CANDIDATES = Table(
    "candidates",
    (
        Column(UID, "string", False, "md5 hex of alt text + absolute image url (as cc2dataset computes it)"),
        Column(URL, "string", False, "absolute http(s) image url"),
        Column(TEXT, "string", False, "alt text as found on the page"),
        Column("page_url", "string", True, "url of the page that holds the image"),
        Column("source_file", "string", False, "crawl file the pair came from"),
    ),
)

# Intermediate of the extract stage: candidates before uid dedup, with a position that makes the
# choice of the kept copy deterministic (lowest (source_file, link_seq) wins).
EXTRACTED_LINKS = CANDIDATES.extend(
    "extracted_links",
    Column("link_seq", "int64", False, "position of the link in its source file"),
)

# Output of filter-text: candidates whose caption passed the text rules, with the caption normalised.
TEXT_OK = CANDIDATES.extend(
    "text_ok",
    Column("text_original", "string", True, "alt text as found, where normalisation changed it (else null)"),
)

REJECTED = Table(
    "rejected",
    (
        Column(UID, "string", False, "uid of the dropped row (for file/record failures: md5 of file#record)"),
        Column(STAGE_COLUMN, "string", False, "stage that dropped it"),
        Column(REASON, "string", False, "a schemas.Reason value"),
        Column(DETAIL, "string", True, "error message, offending value or the uid that was kept instead"),
    ),
)

# The content hashes of the original bytes as fetched (img2dataset writes sha256, DataComp's pool has it):
# a consumer checks that a re-downloaded image is the one that was curated. Fetched, unique and annotated carry them.
CONTENT_HASHES = (
    Column("sha256", "string", True, "sha256 hex of the original bytes as fetched (before decoding or resizing)"),
    Column("md5", "string", True, "md5 hex of the original bytes as fetched"),
)

# Output of download: text_ok rows whose image was fetched and passed the image rules (kept rows only:
# the others are in the stage's rejected/ folder with their Reason).
FETCHED = TEXT_OK.extend(
    "fetched",
    Column("status", "string", False, "'success' or a Reason value"),
    Column("error_message", "string", True, "null for kept rows"),
    Column("width", "int32", True, "original width in pixels"),
    Column("height", "int32", True, "original height in pixels"),
    Column("image_bytes", "binary", True, "resized image, keep-ratio"),
    Column("image_format", "string", True, "format of image_bytes (JPEG or WEBP)"),
    Column("bytes_original", "int64", True, "size of the fetched body in bytes"),
    *CONTENT_HASHES,
)

# Output of dedup: fetched rows left after pHash dedup and decontamination, with their pHash (the stage
# keeps any further columns its input has).
UNIQUE = FETCHED.extend(
    "unique",
    Column("image_phash", "string", False, "64-bit DCT pHash as 16 hex characters (= str(imagehash.phash(image)))"),
)

# Output of hash-index: pHashes of an evaluation set's images, the blocklist of `dedup --blocklist`.
HASH_LIST = Table(
    "hash_list",
    (
        Column("image_phash", "string", False, "16 hex characters"),
        Column("set_name", "string", False, "evaluation set the image belongs to, e.g. coco-val2017"),
        Column("source", "string", True, "file (and tar member or parquet row) the image came from"),
    ),
)

# COYO-700M's released 17 columns, same names and types, plus uid and the image.
ANNOTATED = Table(
    "annotated",
    (
        Column("id", "int64", False, "top 63 bits of md5(uid), collisions resolved (non-negative, from the uid alone)"),
        Column(URL, "string", False, "image url"),
        Column(TEXT, "string", False, "normalised caption"),
        Column("width", "int32", True, "original width in pixels", histogram=True),
        Column("height", "int32", True, "original height in pixels", histogram=True),
        Column("image_phash", "string", True, "64-bit DCT pHash as 16 hex characters"),
        Column("text_length", "int32", True, "characters of the caption"),
        Column("word_count", "int32", True, "whitespace-separated words of the caption"),
        Column("num_tokens_bert", "int32", True, "BERT base uncased WordPiece tokens, without [CLS]/[SEP]", model="tokens"),
        Column("num_tokens_gpt", "int32", True, "GPT-2 BPE tokens", model="tokens"),
        Column("num_faces", "int32", True, "faces the face detector finds on the stored image", model="faces"),
        Column("clip_similarity_vitb32", "float32", True, "cosine of CLIP ViT-B/32 image and text embeddings", model="clip_vitb32", histogram=True),
        Column("clip_similarity_vitl14", "float32", True, "cosine of CLIP ViT-L/14 image and text embeddings", model="clip_vitl14", histogram=True),
        Column("nsfw_score_opennsfw2", "float32", True, "P(nsfw) of Yahoo open_nsfw (opennsfw2), null unless configured", model="nsfw_opennsfw2", histogram=True),
        Column("nsfw_score_gantman", "float32", True, "P(hentai) + P(porn) + P(sexy) of GantMan MobileNetV2, null unless configured", model="nsfw_gantman", histogram=True),
        Column("watermark_score", "float32", True, "P(watermark) of LAION's watermark detector", model="watermark", histogram=True),
        Column("aesthetic_score_laion_v2", "float32", True, "LAION improved-aesthetic-predictor v2 on the ViT-L/14 embedding", model="aesthetic_laion_v2", histogram=True),
        Column(UID, "string", False, "the candidate's uid, carried from extract"),
        Column("image_bytes", "binary", True, "the stored (resized) image"),
        *CONTENT_HASHES,
        # beyond COYO: the offline NSFW default (nudenet's shipped detector), in its own column
        Column("nsfw_score_nudenet", "float32", True, "highest exposed-body-part score NudeDetector.detect reports (320n detector), 0 when none",
               model="nsfw_nudenet"),
    ),
)

# Output of `select`: the uids a preset keeps, sorted (DataComp's apply_filter writes such a list).
UID_LIST = Table(
    "uid_list",
    (Column(UID, "string", False, "uid of a selected annotated row"),),
)

# Per-shard accounting returned by jobs to the driver (counted from the written rows).
SHARD_STATS = Table(
    "shard_stats",
    (
        Column("shard", "string", False),
        Column("rows_in", "int64", False),
        Column("rows_out", "int64", False),
        Column("rejected_json", "string", False),
        Column("skipped", "bool", False),
    ),
)

TABLES = {t.name: t for t in (CANDIDATES, EXTRACTED_LINKS, TEXT_OK, REJECTED, FETCHED, ANNOTATED, SHARD_STATS, UID_LIST)}
TABLES.update({t.name: t for t in (UNIQUE, HASH_LIST)})
