"""Spark job of the filter-text stage: candidates -> text_ok. Thin: it distributes jobs.stages.filter_text
and counts text keys with a Spark aggregation (groupBy key, count, join back), never in driver memory."""

from __future__ import annotations

import logging
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType

from jobs.stages.config import Config
from jobs.stages.filter_text import (
    BUCKET,
    CHECKED_DIR,
    COUNT,
    KEY,
    STAGE,
    bucket_shard,
    check_task,
    frequency_partition,
    input_shard,
    read_checked,
)
from curation.lifecycle import StageSpec, Work, input_files, plan_buckets, run_stage
from curation.stage import StageDir
from jobs.partitions import as_list, bucket_phase, file_phase, run_context, table_task
from schemas import CANDIDATES, TEXT_OK

log = logging.getLogger(__name__)
SPEC = StageSpec(STAGE, upstream="extract", input_columns=tuple(CANDIDATES.names))


def _read_checked_partition(batches, stage: StageDir, n_buckets: int):
    for batch in batches:
        for table in read_checked(stage, batch.column("uri").to_pylist(), n_buckets):
            yield from table.to_batches()


def _with_counts(rows: DataFrame, max_frequency: int) -> DataFrame:
    """Each row with COUNT = how often its text key occurs in all rows, where that is more than
    ``max_frequency`` (null otherwise; 0 turns the rule off)."""
    if max_frequency <= 0:
        return rows.withColumn(COUNT, F.lit(None).cast("long"))
    frequent = rows.groupBy(KEY).agg(F.count(F.lit(1)).alias(COUNT)).where(F.col(COUNT) > max_frequency)
    return rows.join(frequent, on=KEY, how="left")


def _phase_b(spark: SparkSession, stage: StageDir, n_buckets: int, config: Config) -> set[str]:
    """Rows counted by text key and shuffled into uid buckets; returns the bucket shards that exist."""
    rules = config.filter_text.rules
    written = bucket_phase(
        spark, stage, stage.files(CHECKED_DIR), n_buckets,
        read=partial(_read_checked_partition, stage=stage, n_buckets=n_buckets),
        schema=TEXT_OK.spark_schema().add(KEY, StringType(), False).add(BUCKET, IntegerType(), False),
        write=partial(table_task, task=frequency_partition, stage=stage, rules=rules),
        transform=partial(_with_counts, max_frequency=rules.max_frequency),  # counted over every row
        bucket_column=BUCKET,
    )
    log.info("filter-text: phase B: %d bucket shards", len(written))
    return written


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)
    log.info("filter-text: %d candidate files -> %s", len(files), stage.uri)

    def work(stage: StageDir, files: list[str]) -> Work:
        planned = file_phase(spark, stage, files, check_task, config.filter_text.rules, input_shard, log)
        n_rows = sum(s.rows_out for s in stage.completed_shards().values() if s.kept_dir == CHECKED_DIR)
        n_buckets = plan_buckets(n_rows, config.filter_text.rows_per_shard)
        planned |= _phase_b(spark, stage, n_buckets, config) & {bucket_shard(b) for b in range(n_buckets)}
        return Work(planned, {"buckets": n_buckets})

    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale))
