"""The filter-text stage's units of work, engine-agnostic. The Spark job (jobs/filter_text.py) only
distributes these calls and runs the corpus-wide count.

Phase A, one task per input shard (a candidates file): the per-caption rules of filters/text.py.
``_work/checked/part-iNNNNNN.parquet`` holds the rows that pass them (TEXT_OK: text normalised,
text_original where it differed) and ``rejected/part-iNNNNNN.parquet`` the others with their Reason.
Phase B, one task per uid bucket: each row arrives with the number of times its text key
(:func:`filters.text.text_key`) occurs among all phase-A rows; rows whose text occurs more than
``max_frequency`` times go to ``rejected/part-bNNNNN.parquet`` (frequent_text), the rest to
``data/part-bNNNNN.parquet``, sorted by uid. Buckets come from the uid, so the output does not depend
on the engine or the partitioning.

The frequency is counted over the rows that pass the per-caption rules. Those rules see only the
normalised text, so every copy of a text gets the same verdict and the count equals the count over the
whole input, except where case variants of one text get different language-id verdicts.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from curation.stage import ShardStats, StageDir, read_parquet, rejected_table
from filters.text import TextRules, check_captions, text_key
from schemas import CANDIDATES, DETAIL, REASON, TEXT_OK, UID, Reason

STAGE = "filter_text"
CHECKED_DIR = "_work/checked"
KEY = "text_key"
BUCKET = "bucket"
COUNT = "text_count"

__all__ = ["STAGE", "CHECKED_DIR"]


def input_shard(index: int) -> str:
    return f"part-i{index:06d}"


def bucket_shard(bucket: int) -> str:
    return f"part-b{bucket:05d}"


def bucket_of(uid: str, n_buckets: int) -> int:
    return zlib.crc32(uid.encode("utf-8")) % n_buckets


# --- phase A: per-caption rules ------------------------------------------------------------------

_TEXT_FIELD = CANDIDATES.names.index("text")
_INPUT_SCHEMA = CANDIDATES.arrow_schema().set(_TEXT_FIELD, pa.field("text", pa.string(), nullable=True))


def conform_input(table: pa.Table) -> pa.Table:
    """CANDIDATES columns, but a null caption is allowed in: it becomes an empty_text row."""
    missing = [n for n in CANDIDATES.names if n not in table.column_names]
    if missing:
        raise ValueError(f"filter-text input lacks columns {missing}; it has {table.column_names}")
    return table.select(CANDIDATES.names).cast(_INPUT_SCHEMA)



def check_table(candidates: pa.Table, rules: TextRules) -> tuple[pa.Table, pa.Table]:
    """Candidates -> (TEXT_OK rows that pass the per-caption rules, REJECTED rows)."""
    candidates = conform_input(candidates)
    originals = candidates.column("text").to_pylist()
    verdicts = check_captions(originals, rules)
    keep = pa.array([r is None for r in verdicts.reasons], pa.bool_())
    kept_idx = [i for i, r in enumerate(verdicts.reasons) if r is None]
    kept = candidates.filter(keep)
    normalised = [verdicts.texts[i] for i in kept_idx]
    changed = [None if verdicts.texts[i] == originals[i] else originals[i] for i in kept_idx]
    kept = kept.set_column(kept.schema.get_field_index("text"), "text", pa.array(normalised, pa.string()))
    kept = TEXT_OK.conform(kept.append_column("text_original", pa.array(changed, pa.string())))
    uids = candidates.column(UID).to_pylist()
    rejected_idx = [i for i, r in enumerate(verdicts.reasons) if r is not None]
    rejected = rejected_table(
        {
            UID: [uids[i] for i in rejected_idx],
            REASON: [verdicts.reasons[i] for i in rejected_idx],
            DETAIL: [verdicts.details[i] for i in rejected_idx],
        },
        STAGE,
    )
    return kept, rejected


def check_task(stage: StageDir, index: int, uri: str, rules: TextRules) -> ShardStats:
    """Phase A for one input file (skipped when its marker exists)."""
    shard = input_shard(index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    candidates = conform_input(read_parquet(uri, stage.storage))
    kept, rejected = check_table(candidates, rules)
    return stage.write_shard(shard, kept, rejected, rows_in=candidates.num_rows, kept_dir=CHECKED_DIR, extra={"file": uri})


# --- phase B: text frequency ---------------------------------------------------------------------


def with_key_and_bucket(table: pa.Table, n_buckets: int) -> pa.Table:
    table = TEXT_OK.conform(table)
    keys = pa.array([text_key(t) for t in table.column("text").to_pylist()], pa.string())
    buckets = pa.array([bucket_of(u, n_buckets) for u in table.column(UID).to_pylist()], pa.int32())
    return table.append_column(KEY, keys).append_column(BUCKET, buckets)


def read_checked(stage: StageDir, uris: Iterable[str], n_buckets: int) -> Iterator[pa.Table]:
    """Phase-A rows with their text key and bucket (all of them: the counts need every row)."""
    for uri in uris:
        table = read_parquet(uri, stage.storage)
        if table.num_rows:
            yield with_key_and_bucket(table, n_buckets)


def split_frequent(rows: pa.Table, rules: TextRules) -> tuple[pa.Table, pa.Table]:
    """Rows carrying COUNT (null = not frequent) -> (kept TEXT_OK sorted by uid, frequent_text rows)."""
    counts = rows.column(COUNT)
    if rules.max_frequency > 0:
        frequent = pc.fill_null(pc.greater(counts, rules.max_frequency), False)
    else:
        frequent = pa.array([False] * rows.num_rows, pa.bool_())
    kept = TEXT_OK.conform(rows.filter(pc.invert(frequent))).sort_by(UID)
    dropped = rows.filter(frequent).sort_by(UID)
    rejected = rejected_table(
        {
            UID: dropped.column(UID),
            REASON: [Reason.FREQUENT_TEXT] * dropped.num_rows,
            DETAIL: [f"text appears {n} times > {rules.max_frequency}" for n in dropped.column(COUNT).to_pylist()],
        },
        STAGE,
    )
    return kept, rejected


def frequency_task(stage: StageDir, bucket: int, rows: pa.Table, rules: TextRules) -> ShardStats:
    shard = bucket_shard(bucket)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    kept, rejected = split_frequent(rows, rules)
    return stage.write_shard(shard, kept, rejected, rows_in=rows.num_rows)


def frequency_partition(stage: StageDir, table: pa.Table, rules: TextRules) -> list[ShardStats]:
    """All buckets present in one partition (a Spark partition may hold several)."""
    buckets = table.column(BUCKET)
    return [
        frequency_task(stage, b, table.filter(pc.equal(buckets, b)), rules)
        for b in sorted(pc.unique(buckets).to_pylist())
    ]


def count_keys(tables: Iterable[pa.Table]) -> dict[str, int]:
    """In-memory text counts (the pure path and tests; the job counts with a Spark aggregation)."""
    counts: dict[str, int] = {}
    for table in tables:
        grouped = table.group_by(KEY).aggregate([(KEY, "count")])
        for key, n in zip(grouped.column(KEY).to_pylist(), grouped.column(f"{KEY}_count").to_pylist()):
            counts[key] = counts.get(key, 0) + n
    return counts


def attach_counts(rows: pa.Table, counts: dict[str, int], rules: TextRules) -> pa.Table:
    """COUNT for the rows whose text is frequent, null for the others (what the job's join gives)."""
    limit = rules.max_frequency
    values = [counts[k] if limit and counts[k] > limit else None for k in rows.column(KEY).to_pylist()]
    return rows.append_column(COUNT, pa.array(values, pa.int64()))


def filter_text_table(candidates: pa.Table, rules: TextRules = TextRules()) -> tuple[pa.Table, pa.Table]:
    """The whole stage in memory, without Spark: what the job must produce (up to row order)."""
    kept, rejected = check_table(candidates, rules)
    rows = with_key_and_bucket(kept, 1)
    final, frequent = split_frequent(attach_counts(rows, count_keys([rows]), rules), rules)
    return final, pa.concat_tables([rejected, frequent])
