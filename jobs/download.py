"""Spark job of the download stage: text_ok -> fetched. Thin: it distributes jobs.stages.download's tasks
(one lane of shards per task, so the tasks that reach a host are bounded) with mapInArrow, or hands them
to the local process pool (``engine = "local"``)."""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

from pyspark.sql import SparkSession

from jobs.stages.config import Config, ConfigError
from jobs.stages.download import (
    STAGE, WorkItem, by_lane, check_plan, download_task, pending_transient, plan_work, run_local,
)
from jobs.stages.safety import check_lists
from curation.lifecycle import StageSpec, Work, input_files, run_stage
from curation.stage import StageDir, shard_stats_batch
from jobs.partitions import MAX_TASKS, as_list, run_context
from schemas import SHARD_STATS, UID

log = logging.getLogger(__name__)
SPEC = StageSpec(STAGE, upstream="filter_text", input_columns=(UID, "url", "text"))
WORK_SCHEMA = "uri string, start long, stop long, shard string, lane long, rows array<long>"


def _download_partition(batches, stage: StageDir, opts, safety):
    book = {}  # one task: host back-off and cool-down carry from shard to shard
    for batch in batches:
        items = [WorkItem(**{**row, "rows": tuple(row["rows"])}) for row in batch.to_pylist()]
        yield shard_stats_batch([download_task(item, stage, opts, book, safety) for item in items])


def _run_spark(spark: SparkSession, stage: StageDir, items: list[WorkItem], opts, safety) -> int:
    # a lane's items go to one partition (run one after another): a host's lanes bound the tasks reaching it
    lanes = {lane[0].lane: k for k, lane in enumerate(by_lane(items))}
    n = min(len(lanes), MAX_TASKS)
    keyed = [(lanes[i.lane] % n, dataclasses.astuple(i)) for i in items]
    rdd = spark.sparkContext.parallelize(keyed, n).partitionBy(n, lambda key: key).values()
    df = spark.createDataFrame(rdd, WORK_SCHEMA)
    task = partial(_download_partition, stage=stage, opts=opts, safety=safety)
    done = df.mapInArrow(task, SHARD_STATS.spark_schema()).collect()
    return sum(not r.skipped for r in done)


def run(spark: SparkSession | None, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    """Fetch every row of the finished stage at ``inputs`` into ``output``; ``spark`` may be None for
    ``engine = "local"``. A rerun finishes missing shards and retries transient failures."""
    opts = config.download
    if opts.engine == "spark" and spark is None:
        raise ConfigError("[download] engine = 'spark' needs a Spark session")
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)
    plans: dict = {}

    def plan() -> list[WorkItem]:
        if "items" not in plans:
            plans["items"] = plan_work(files, opts.rows_per_shard, stage.storage, opts.politeness)
        return plans["items"]

    def work(stage: StageDir, files: list[str]) -> Work:
        items = plan()
        check_plan(stage, items)  # finished shards of another plan would be counted twice
        lists = check_lists(config.safety, stage.storage)  # a missing or malformed list stops the run before any fetch
        if lists:
            log.info("download: safety lists %s", ", ".join(f"{name} ({n} entries)" for name, n in lists.items()))
        log.info("download: %d input files, %d shards (%s engine) -> %s", len(files), len(items), opts.engine, stage.uri)
        if opts.engine == "local":
            written = sum(not s.extra.get("skipped") for s in run_local(stage, items, opts, config.safety))
        else:
            written = _run_spark(spark, stage, items, opts, config.safety) if items else 0
        log.info("download: wrote %d shards", written)
        return Work({i.shard for i in items}, {"transient": pending_transient(stage)})

    def retry_pending(stage: StageDir) -> bool:
        if not (opts.retry_transient and pending_transient(stage) > 0):
            return False
        check_plan(stage, plan())  # before _SUCCESS goes: a refused rerun leaves a finished stage finished
        return True

    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     rerun_complete=retry_pending)
