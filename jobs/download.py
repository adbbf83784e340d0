"""Spark job of the download stage: text_ok -> fetched. Thin: it distributes curation.download's tasks
(one per input slice) with mapInArrow, or hands them to the local process pool (``engine = "local"``)."""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

from pyspark.sql import SparkSession

from curation.config import Config, ConfigError
from curation.download import STAGE, WorkItem, download_task, pending_transient, plan_work, run_local
from curation.lifecycle import StageSpec, Work, run_stage, input_files
from curation.stage import StageDir, shard_stats_batch
from jobs.partitions import as_list, distribute, run_context
from schemas import SHARD_STATS

log = logging.getLogger(__name__)
SPEC = StageSpec(STAGE, upstream="filter_text", input_columns=("uid", "url", "text"))
WORK_SCHEMA = "uri string, start long, stop long, shard string"


def _download_partition(batches, stage: StageDir, opts):
    for batch in batches:
        yield shard_stats_batch([download_task(WorkItem(**row), stage, opts) for row in batch.to_pylist()])


def run(spark: SparkSession | None, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    """Fetch every row of the finished stage at ``inputs`` into ``output``; ``spark`` may be None for
    ``engine = "local"``. A rerun finishes missing shards and retries transient failures."""
    opts = config.download
    if opts.engine == "spark" and spark is None:
        raise ConfigError("[download] engine = 'spark' needs a Spark session")
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)

    def work(stage: StageDir, files: list[str]) -> Work:
        items = plan_work(files, opts.rows_per_shard, stage.storage)
        log.info("download: %d input files, %d shards (%s engine) -> %s", len(files), len(items), opts.engine, stage.uri)
        if opts.engine == "local":
            written = sum(not s.extra.get("skipped") for s in run_local(stage, items, opts))
        else:
            task = partial(_download_partition, stage=stage, opts=opts)
            done = distribute(spark, [dataclasses.astuple(i) for i in items], WORK_SCHEMA, task, SHARD_STATS.spark_schema())
            written = sum(not r.skipped for r in done)
        log.info("download: wrote %d shards", written)
        return Work({i.shard for i in items}, {"transient": pending_transient(stage)})

    def retry_pending(stage: StageDir) -> bool:
        return opts.retry_transient and pending_transient(stage) > 0

    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     rerun_complete=retry_pending)
