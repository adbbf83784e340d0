"""Spark job of the dedup stage: fetched -> unique. Thin: it distributes jobs.stages.dedup's shard tasks
and runs the global decisions of jobs/dedup/decide.py between them."""

from __future__ import annotations

import logging
from functools import partial

import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession

from jobs.stages.config import Config
from jobs.stages.dedup import (
    HASHED_DIR,
    SPEC,
    STAGE,
    apply_task,
    blocklist_files,
    final_shard,
    hash_task,
    hashed_shard,
    read_blocklist,
    read_keys,
)
from curation.lifecycle import Work, run_stage, input_files
from curation.stage import StageDir, shard_stats_batch
from filters.dedup import BLOCKLIST, DECISIONS, KEYS
from jobs.dedup.decide import decide
from jobs.partitions import MAX_TASKS, as_list, distribute, file_tasks, run_context, whole_partition
from schemas import SHARD_STATS

log = logging.getLogger(__name__)


def _work(spark: SparkSession, items: list[tuple[int, str]]) -> DataFrame:
    df = spark.createDataFrame(items or [], "index int, uri string")
    return df.repartition(max(1, min(len(items), MAX_TASKS)))


def _keys_partition(batches, stage: StageDir):
    for batch in batches:
        for index in batch.column("index").to_pylist():
            yield from read_keys(stage, index).to_batches()


def _blocklist_partition(batches, stage: StageDir):
    for batch in batches:
        for uri in batch.column("uri").to_pylist():
            yield from read_blocklist(uri, stage.storage).to_batches()


def _apply_partition(batches, stage: StageDir, files: list[str]):
    decisions = whole_partition(batches)
    if decisions is None:
        return
    shards = sorted(set(decisions.column("shard").to_pylist()))
    decisions = decisions.filter(pc.greater_equal(decisions.column("row"), 0))  # drop the one-per-shard markers
    yield shard_stats_batch([apply_task(stage, i, files[i], decisions) for i in shards])


def _decide_and_apply(spark: SparkSession, stage: StageDir, files: list[str], listed: list[str], config: Config) -> dict:
    """Phase B (global decisions over every key) and phase C (one task per input file) for the files
    whose final shard is missing."""
    todo = [i for i in range(len(files)) if not stage.has_shard(final_shard(i))]
    if not todo:
        return {}
    keys = _work(spark, list(enumerate(files))).mapInArrow(partial(_keys_partition, stage=stage), KEYS.spark_schema())
    block = None
    if listed:
        block = _work(spark, list(enumerate(listed))).mapInArrow(
            partial(_blocklist_partition, stage=stage), BLOCKLIST.spark_schema()
        )
    decisions, info = decide(keys.localCheckpoint(), config.dedup.rules, block)
    markers = spark.createDataFrame([(i, -1, "", "", None) for i in todo], DECISIONS.spark_schema())
    wanted = decisions.where(decisions.shard.isin(todo)).unionByName(markers)
    written = wanted.repartition("shard").mapInArrow(
        partial(_apply_partition, stage=stage, files=files), SHARD_STATS.spark_schema()
    ).collect()
    log.info("dedup: phase C wrote %d shards", sum(not r.skipped for r in written))
    return info


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False, blocklist: list[str] | None = None) -> dict:
    rules = config.dedup.rules
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)
    listed = blocklist_files(list(blocklist if blocklist is not None else config.dedup.blocklist), stage.storage)
    log.info("dedup: %d input files, %d blocklist files -> %s (pHash %s, k=%d)", len(files), len(listed), stage.uri,
             rules.keys.phash_mode, rules.links.max_distance)

    def work(stage: StageDir, files: list[str]) -> Work:
        task = partial(file_tasks, task=hash_task, stage=stage, rules=rules)
        done = distribute(spark, [(i, f) for i, f in enumerate(files)], "index int, uri string", task, SHARD_STATS.spark_schema())
        log.info("dedup: phase A hashed %d files (%d already done)", len(done), sum(r.skipped for r in done))
        stage.require_markers({hashed_shard(i) for i in range(len(files))})
        info = _decide_and_apply(spark, stage, files, listed, config)
        hashing = [s.extra for s in stage.completed_shards().values() if s.kept_dir == HASHED_DIR]
        extra = {
            "mode": rules.mode,
            "phash_mode": rules.keys.phash_mode,
            "hash_cpu_seconds": round(sum(e.get("hash_cpu_seconds", 0.0) for e in hashing), 3),
            "blocklist_files": listed,
            **info,
        }
        planned = {hashed_shard(i) for i in range(len(files))} | {final_shard(i) for i in range(len(files))}
        return Work(planned, extra)

    settings = {"rules": config.to_dict()["dedup"]["rules"], "blocklist": listed}
    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     settings=settings)
