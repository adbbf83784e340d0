"""Spark job of the balance stage (MetaCLIP metadata balancing). Thin: it distributes jobs.stages.balance.
The entry list goes to the executors as one broadcast (each Python worker builds its automaton once); the
rows per entry come from a Spark groupBy over the (uid, entry) pairs, and only those per-entry counts
(at most one number per entry) reach the driver."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from curation.errors import ConfigError
from curation.lifecycle import Work, input_files, run_stage
from curation.stage import StageDir, read_parquet, shard_stats_batch
from jobs.partitions import as_list, distribute, run_context, spread
from jobs.stages.balance import (
    ENTRY, KEPT_DIR, SPEC, STAGE, apply_task, counts_array, entry_stats, input_stage, load_counts, load_entries,
    match_task, pairs, save_counts, shard_name, unmatchable,
)
from jobs.stages.config import Config
from filters.balance import entries_digest
from schemas import SHARD_STATS, UID

log = logging.getLogger(__name__)
PAIRS_DDL = f"{UID} string, {ENTRY} int"
COUNTS_DDL = f"{ENTRY} int, count long"


def _match_partition(batches, stage: StageDir, entries, key: str):
    for batch in batches:
        for index, uri in zip(batch.column("index").to_pylist(), batch.column("uri").to_pylist()):
            yield from pairs(match_task(stage, index, uri, entries.value, key)).to_batches()


def _apply_partition(batches, stage: StageDir, entries, counts, key: str, t: int, seed: int):
    for batch in batches:
        yield shard_stats_batch([apply_task(stage, r["index"], r["uri"], counts.value, entries.value, key, t, seed)
                                 for r in batch.to_pylist()])


def _read_counts(batches, stage: StageDir):
    for batch in batches:
        for uri in batch.column("uri").to_pylist():
            yield from read_parquet(uri, stage.storage).to_batches()


def _collect_counts(frame, n_entries: int) -> np.ndarray:
    """Per-entry counts of a Spark (entry, count) aggregation, as an array on the driver."""
    table = frame.toArrow()
    if table.num_rows == 0:
        return np.zeros(n_entries, np.int64)
    return counts_array(table.cast(pa.schema([(ENTRY, pa.int32()), ("count", pa.int64())])), n_entries)


def count_before(spark: SparkSession, stage: StageDir, files: list[str], entries, key: str, n_entries: int) -> np.ndarray:
    """Rows per entry over every input file: the saved counts on a resumed run, else matched and counted."""
    saved = load_counts(stage, n_entries)
    if saved is not None:
        return saved
    matched = spread(spark, list(enumerate(files)), "index int, uri string").mapInArrow(
        partial(_match_partition, stage=stage, entries=entries, key=key), PAIRS_DDL
    )
    counts = _collect_counts(matched.groupBy(ENTRY).agg(F.count(F.lit(1)).alias("count")), n_entries)
    save_counts(stage, counts)
    return counts


def count_after(spark: SparkSession, stage: StageDir, n_entries: int) -> np.ndarray:
    """Rows per entry among the kept rows, summed over the shards' kept-entry counts."""
    uris = stage.files(KEPT_DIR)
    if not uris:
        return np.zeros(n_entries, np.int64)
    kept = spread(spark, [(u,) for u in uris]).mapInArrow(partial(_read_counts, stage=stage), COUNTS_DDL)
    return _collect_counts(kept.groupBy(ENTRY).agg(F.sum("count").cast("long").alias("count")), n_entries)


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    opts = config.balance
    if not opts.metadata:
        raise ConfigError("balance needs an entry list: --metadata ENTRIES or [balance] metadata = \"...\"")
    stage = StageDir(output, STAGE, config.storage.resolved())
    made_by = input_stage(as_list(inputs), stage.storage)
    files = input_files(SPEC, as_list(inputs), stage.storage)
    entries = load_entries(opts.metadata, stage.storage)
    key = entries_digest(entries)
    log.info("balance: %d input files (%s) -> %s; %d entries (%d cannot match), t = %d", len(files),
             made_by or "parquet", stage.uri, len(entries), unmatchable(entries), opts.t)

    def work(stage: StageDir, files: list[str]) -> Work:
        shared = spark.sparkContext.broadcast(entries)
        before = count_before(spark, stage, files, shared, key, len(entries))
        log.info("balance: %d of %d entries matched", int((before > 0).sum()), len(entries))
        todo = [(i, f) for i, f in enumerate(files) if not stage.has_shard(shard_name(i))]
        counts = spark.sparkContext.broadcast(before)
        apply = partial(_apply_partition, stage=stage, entries=shared, counts=counts, key=key, t=opts.t, seed=opts.seed)
        written = distribute(spark, todo, "index int, uri string", apply, SHARD_STATS.spark_schema())
        log.info("balance: wrote %d shards (%d already done)", len(written), len(files) - len(todo))
        after = count_after(spark, stage, len(entries))
        return Work({shard_name(i) for i in range(len(files))}, entry_stats(before, after, entries, opts.t, opts.seed, made_by))

    settings = {"balance": {"t": opts.t, "seed": opts.seed, "metadata": opts.metadata, "entries": key}}
    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     settings=settings)
