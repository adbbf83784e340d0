"""Spark job of `curation hash-index`: evaluation-set images -> a HASH_LIST stage folder (the
blocklist of `dedup --blocklist`). One task per tar file, parquet file or run of image files."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from functools import partial

from pyspark.sql import SparkSession

from curation import storage
from jobs.stages.config import Config
from curation.errors import InputError
from jobs.stages.dedup import INDEX_STAGE, IndexUnit, index_shard, index_task, plan_index, split_source
from curation.lifecycle import StageSpec, Work, run_stage
from curation.stage import StageDir, shard_stats_batch
from jobs.partitions import distribute, run_context
from schemas import SHARD_STATS

log = logging.getLogger(__name__)
SPEC = StageSpec(INDEX_STAGE)


def _index_partition(batches, stage: StageDir, rules):
    for batch in batches:
        units = [IndexUnit(**{**r, "uris": tuple(r["uris"])}) for r in batch.to_pylist()]
        yield shard_stats_batch([index_task(stage, u, rules) for u in units])


def run(spark: SparkSession, sources: list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    rules = config.dedup.rules
    stage = StageDir(output, INDEX_STAGE, config.storage.resolved())
    units, skipped = plan_index(sources, stage.storage, config.dedup.images_per_shard)
    if not units:
        raise InputError(f"no images, tar or parquet files in {sources}")
    listing = json.dumps([asdict(u) for u in units], sort_keys=True).encode()
    log.info("hash-index: %d units of work from %d sources -> %s (%d other files skipped)", len(units), len(sources),
             stage.uri, len(skipped))

    def work(stage: StageDir, _sources: list[str]) -> Work:
        rows = [asdict(u) for u in units]
        task = partial(_index_partition, stage=stage, rules=rules)
        distribute(spark, rows, "index int, set_name string, kind string, uris array<string>", task, SHARD_STATS.spark_schema())
        sets: dict[str, int] = {}
        for s in stage.completed_shards().values():
            sets[s.extra["set_name"]] = sets.get(s.extra["set_name"], 0) + s.rows_out
        extra = {"phash_mode": rules.keys.phash_mode, "sets": dict(sorted(sets.items())), "skipped_files": skipped[:100],
                 "skipped_file_count": len(skipped)}
        return Work({index_shard(u.index) for u in units}, extra)

    settings = {"units_sha256": hashlib.sha256(listing).hexdigest(), "phash_mode": rules.keys.phash_mode}
    return run_stage(SPEC, stage, [storage.absolute(split_source(s)[1]) for s in sources], work, config=config.to_dict(),
                     context=run_context(spark, overwrite, redo_stale), settings=settings)
