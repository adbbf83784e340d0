"""Spark job of the extract stage: crawl files -> candidates. Thin: it distributes jobs.stages.extract."""

from __future__ import annotations

import logging
from functools import partial

from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType

from curation import storage
from jobs.stages.config import Config
from curation.errors import InputError
from jobs.stages.extract import (
    LINKS_DIR,
    STAGE,
    bucket_shard,
    dedup_partition,
    extract_task,
    file_shard,
    link_files,
    read_links_by_bucket,
    stats_extra,
)
from curation.lifecycle import StageSpec, Work, plan_buckets, run_stage
from curation.stage import StageDir
from jobs.partitions import as_list, bucket_phase, file_phase, run_context, table_task
from schemas import EXTRACTED_LINKS

log = logging.getLogger(__name__)
SPEC = StageSpec(STAGE, upstream=None)
CRAWL_RECORDS = ("wat_json", "http_response")  # the record kinds links come from


def _read_links_partition(batches, stage: StageDir, n_buckets: int, skip: set[int]):
    for batch in batches:
        for table in read_links_by_bucket(stage, batch.column("uri").to_pylist(), n_buckets, skip):
            yield from table.to_batches()


def _phase_b(spark: SparkSession, stage: StageDir, n_buckets: int) -> set[str]:
    """Links shuffled into uid buckets; returns the bucket shards that exist (empty buckets have none)."""
    written = bucket_phase(
        spark, stage, link_files(stage), n_buckets,
        read=partial(_read_links_partition, stage=stage, n_buckets=n_buckets, skip=set()),
        schema=EXTRACTED_LINKS.spark_schema().add("bucket", IntegerType(), False),
        write=partial(table_task, task=dedup_partition, stage=stage),
    )
    log.info("extract: phase B: %d bucket shards", len(written))
    return written


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = storage.expand_inputs(as_list(inputs), stage.storage, config.extract.paths_base)
    if not files:
        raise InputError(f"no crawl files in {as_list(inputs)}")
    log.info("extract: %d input files -> %s", len(files), stage.uri)

    def work(stage: StageDir, files: list[str]) -> Work:
        planned = file_phase(spark, stage, files, extract_task, config.extract.rules, file_shard, log)  # one task per crawl file
        extra = stats_extra(stage)
        if not any(extra["records"].get(kind) for kind in CRAWL_RECORDS):
            problems = "; ".join(f"{e['file']}: {e['error']}" for e in extra["file_errors"][:5])
            raise InputError(f"none of the {len(files)} input files held a crawl record{': ' + problems if problems else ''}")
        n_links = sum(s.rows_out for s in stage.completed_shards().values() if s.kept_dir == LINKS_DIR)
        n_buckets = plan_buckets(n_links, config.extract.rows_per_shard)
        planned |= _phase_b(spark, stage, n_buckets) & {bucket_shard(b) for b in range(n_buckets)}
        return Work(planned, {**extra, "buckets": n_buckets})

    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale))
