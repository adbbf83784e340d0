"""Stage tables and rejection reasons: the single definition both pyarrow and Spark use."""

from schemas.reasons import Reason, Rejection
from schemas.tables import (
    ANNOTATED,
    CANDIDATES,
    EXTRACTED_LINKS,
    FETCHED,
    REJECTED,
    SHARD_STATS,
    TABLES,
    TEXT_OK,
    Column,
    Table,
)
from schemas.tables import DETAIL, HASH_LIST, REASON, STAGE_COLUMN, TEXT, UID, UID_LIST, UNIQUE, URL

__all__ = [
    "ANNOTATED",
    "CANDIDATES",
    "EXTRACTED_LINKS",
    "FETCHED",
    "REJECTED",
    "SHARD_STATS",
    "TABLES",
    "TEXT_OK",
    "HASH_LIST",
    "UNIQUE",
    "UID_LIST",
    "UID",
    "URL",
    "TEXT",
    "STAGE_COLUMN",
    "REASON",
    "DETAIL",
    "Column",
    "Reason",
    "Rejection",
    "Table",
]
