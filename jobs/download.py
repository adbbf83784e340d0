"""Spark job of the download stage: text_ok -> fetched. Thin: it distributes curation.download's tasks
(one per input slice) with mapInArrow, or hands them to the local process pool (``engine = "local"``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial

from pyspark.sql import SparkSession

from curation import storage
from curation.config import Config
from curation.download import (
    STAGE, WorkItem, by_lane, check_plan, download_task, pending_transient, plan_work, run_local,
)
from curation.filter_text import input_files
from curation.stage import SUCCESS, StageDir
from curation.stage import shard_stats_batch
from schemas import SHARD_STATS

log = logging.getLogger(__name__)

WORK_SCHEMA = "uri string, start long, stop long, shard string, lane long, rows array<long>"


def _download_partition(batches, stage: StageDir, opts):
    book = {}  # one task: host back-off and cool-down carry from shard to shard
    for batch in batches:
        items = [WorkItem(**{**row, "rows": tuple(row["rows"])}) for row in batch.to_pylist()]
        yield shard_stats_batch([download_task(item, stage, opts, book) for item in items])


def _run_spark(spark: SparkSession, stage: StageDir, items: list[WorkItem], opts) -> int:
    # a lane's items go to one partition (run one after another): a host's lanes bound the tasks reaching it
    lanes = {lane[0].lane: k for k, lane in enumerate(by_lane(items))}
    n = min(len(lanes), 10_000)
    keyed = [(lanes[i.lane] % n, dataclasses.astuple(i)) for i in items]
    rdd = spark.sparkContext.parallelize(keyed, n).partitionBy(n, lambda key: key).values()
    df = spark.createDataFrame(rdd, WORK_SCHEMA)
    done = df.mapInArrow(partial(_download_partition, stage=stage, opts=opts), SHARD_STATS.spark_schema()).collect()
    return sum(not r.skipped for r in done)


def run(spark: SparkSession | None, source: str, output: str, config: Config, overwrite: bool = False) -> dict:
    """Fetch every row of the finished stage at ``source`` into ``output``; ``spark`` may be None for
    ``engine = "local"``. A rerun finishes missing shards and retries transient failures."""
    started = time.time()
    opts = config.download
    stage = StageDir(output, STAGE, config.storage.resolved())
    if stage.is_complete() and not overwrite and not (opts.retry_transient and pending_transient(stage)):
        log.info("%s is complete (_SUCCESS present, no transient failures to retry); nothing to do", output)
        return stage.stats()
    files = input_files(source, stage.storage)
    stage.prepare(overwrite=overwrite)
    stage.pin_inputs(files)
    items = plan_work(files, opts.rows_per_shard, stage.storage, opts.politeness)
    check_plan(stage, items)  # before _SUCCESS goes: a refused rerun leaves a finished stage finished
    storage.delete(stage.path(SUCCESS), stage.storage)  # shards may change from here on
    log.info("download: %d input files, %d shards (%s engine) -> %s", len(files), len(items), opts.engine, output)

    if items and opts.engine == "local":
        written = sum(not s.extra.get("skipped") for s in run_local(stage, items, opts))
    elif items:
        if spark is None:
            raise ValueError("[download] engine = 'spark' needs a Spark session")
        written = _run_spark(spark, stage, items, opts)
    else:
        written = 0
    log.info("download: wrote %d shards", written)

    stats = stage.finalize(config.to_dict(), started, inputs=files, extra={"transient": pending_transient(stage)})
    log.info("download: %d rows in, %d kept, rejected %s", stats["rows_in"], stats["rows_out"], stats["rejected"])
    return stats


if __name__ == "__main__":
    from jobs.cli import submit_main

    submit_main("download")
