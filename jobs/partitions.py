"""Partition functions the Spark jobs hand to ``mapInArrow``: they adapt the engine-agnostic tasks of
curation/ to Arrow batches in and SHARD_STATS batches out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.lifecycle import RunContext
from curation.stage import StageDir, shard_stats_batch
from schemas import SHARD_STATS


def whole_partition(batches) -> pa.Table | None:
    """All Arrow batches of one Spark partition as one table (None when it is empty)."""
    tables = [pa.Table.from_batches([b]) for b in batches]
    return pa.concat_tables(tables) if tables else None


def file_tasks(batches, task: Callable, stage: StageDir, rules) -> Iterator[pa.RecordBatch]:
    """Rows of (index, uri): one ``task(stage, index, uri, rules)`` per input file."""
    for batch in batches:
        yield shard_stats_batch([task(stage, r["index"], r["uri"], rules) for r in batch.to_pylist()])


def table_task(batches, task: Callable, stage: StageDir, **kwargs) -> Iterator[pa.RecordBatch]:
    """The whole partition as one table: ``task(stage, table, **kwargs)`` returns its shards' stats."""
    table = whole_partition(batches)
    if table is not None:
        yield shard_stats_batch(task(stage, table, **kwargs))


MAX_TASKS = 10_000  # one Spark partition per unit of work, up to this many


def spread(spark: SparkSession, rows: list, ddl: str = "uri string") -> DataFrame:
    """``rows`` (tuples matching ``ddl``) as a DataFrame with one partition per row, up to MAX_TASKS."""
    return spark.createDataFrame(rows, ddl).repartition(min(len(rows), MAX_TASKS))


def distribute(spark: SparkSession, rows: list, ddl: str, partition_fn: Callable, schema) -> list:
    """One Spark task per row of work (up to MAX_TASKS partitions): ``partition_fn`` runs over each
    partition with mapInArrow; returns the collected SHARD_STATS rows (one per shard the tasks handled)."""
    if not rows:
        return []
    return spread(spark, rows, ddl).mapInArrow(partition_fn, schema).collect()


def file_phase(
    spark: SparkSession, stage: StageDir, files: list[str], task: Callable, rules, shard_of: Callable[[int], str], log: logging.Logger,
) -> set[str]:
    """Phase A of the bucketed stages (extract, filter-text): one ``task(stage, index, uri, rules)`` per
    input file; every file's marker (``shard_of(index)``) must be readable here before phase B buckets
    their rows. Returns the planned shards."""
    todo = [{"index": i, "uri": f} for i, f in enumerate(files)]
    work = partial(file_tasks, task=task, stage=stage, rules=rules)
    done = distribute(spark, todo, "index int, uri string", work, SHARD_STATS.spark_schema())
    log.info("%s: phase A %d files (%d already done)", stage.stage.replace("_", "-"), len(done), sum(r.skipped for r in done))
    planned = {shard_of(i) for i in range(len(files))}
    stage.require_markers(planned)
    return planned


def run_context(spark: SparkSession | None, overwrite: bool, redo_stale: bool) -> RunContext:
    """The lifecycle's view of this run: the master the tasks go to (None without Spark)."""
    return RunContext(master=spark.sparkContext.master if spark is not None else None, overwrite=overwrite, redo_stale=redo_stale)


def as_list(inputs: str | list[str]) -> list[str]:
    return [inputs] if isinstance(inputs, str) else list(inputs)


def bucket_phase(
    spark: SparkSession,
    stage: StageDir,
    uris: list[str],
    n_buckets: int,
    read: Callable,
    schema,
    write: Callable,
    transform: Callable | None = None,
    bucket_column: str = "bucket",
) -> set[str]:
    """Phase B of the bucketed stages (extract, filter-text): the phase-A files read by ``read`` (a
    mapInArrow function over ``uri`` rows, giving ``schema`` with ``bucket_column``), ``transform`` applied
    to the whole DataFrame (a corpus-wide count, say), then one ``write`` task per bucket not yet written
    (``part-bNNNNN`` markers). Returns the bucket shards that exist (an empty bucket has none)."""
    completed = {name for name in stage.completed_shards() if name.startswith("part-b")}
    skip = sorted(int(name[len("part-b") :]) for name in completed)
    if not uris or len(skip) >= n_buckets:
        return completed
    paths = spread(spark, [(u,) for u in uris])
    rows = paths.mapInArrow(read, schema)
    if transform is not None:
        rows = transform(rows)
    if skip:
        rows = rows.where(~F.col(bucket_column).isin(skip))
    written = rows.repartition(min(n_buckets, MAX_TASKS), bucket_column).mapInArrow(write, SHARD_STATS.spark_schema()).collect()
    return completed | {r.shard for r in written}
