"""Spark job of the annotate stage: unique -> annotated. Thin: it distributes jobs.stages.annotate.

One task per input chunk (mapInArrow over a DataFrame of chunks); each executor Python worker loads the
models once per device (models.runner.get_runner) and keeps them for every later task it runs. A task
given GPUs by Spark's resource scheduling runs its models on the first it was assigned. After the shards,
one pass over the written (id, uid) pairs checks ids for collisions and resolves them.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from curation import storage
from jobs.stages.annotate import (
    SPEC,
    STAGE,
    Chunk,
    annotate_task,
    collision_groups,
    embedding_section,
    ids_of_file,
    plan_chunks,
    reassign_ids,
    rewrite_ids,
    stats_extra,
)
from jobs.stages.config import Config, ConfigError
from curation.lifecycle import Work, run_stage, input_files
from curation.stage import DATA, StageDir, shard_stats_batch
from jobs.partitions import as_list, distribute, run_context, spread
from models.config import ModelsConfig, load_models_config
from models.registry import check_weights, describe_columns
from models.runner import RunOptions
from schemas import SHARD_STATS, UID

log = logging.getLogger(__name__)
CHUNK_DDL = "file_index int, uri string, chunk int, start long, stop long"


def resolve_models(config: Config) -> ModelsConfig:
    """The MODELS.toml to use (writing tiny random ones first when [annotate] random_models asks),
    with every configured file checked before any task starts."""
    opts, store = config.annotate, config.storage.resolved()
    path = opts.models
    if opts.random_models:
        if opts.models:
            raise ConfigError("[annotate]: set models or random_models, not both")
        path = storage.join(storage.absolute(opts.random_models), "MODELS.toml")
        if not storage.exists(path, store):
            from models.weights.random_init import write_random_models

            log.warning("annotate: writing RANDOM-WEIGHT tiny models to %s: their scores are meaningless", opts.random_models)
            write_random_models(opts.random_models, "tiny", options=store)  # a local folder or s3://
    models = load_models_config(path, store)
    check_weights(models, store)
    return models


def task_gpus() -> tuple[str, ...]:
    """The GPU addresses Spark assigned the running task (spark.task.resource.gpu.amount); () without."""
    from pyspark import TaskContext

    context = TaskContext.get()
    gpu = context.resources().get("gpu") if context is not None else None
    return tuple(gpu.addresses) if gpu is not None else ()


def _annotate_partition(batches, stage: StageDir, models: ModelsConfig, run: RunOptions, id_bits: int, embeddings: str | None):
    gpus = task_gpus()
    for batch in batches:
        yield shard_stats_batch([annotate_task(stage, Chunk(**r), models, run, id_bits, embeddings, gpus) for r in batch.to_pylist()])


def _ids_partition(batches, options):
    for batch in batches:
        for uri in batch.column("uri").to_pylist():
            yield from ids_of_file(uri, options).to_batches()


def fix_id_collisions(spark: SparkSession, stage: StageDir, id_bits: int) -> int:
    """Find ids shared by several uids across the whole output and reassign them; returns how many moved."""
    files = stage.files(DATA)
    if not files:
        return 0
    paths = spread(spark, [(f,) for f in files])
    ids = paths.mapInArrow(partial(_ids_partition, options=stage.storage), "id long, uid string, shard string")
    shared = ids.groupBy("id").count().filter(F.col("count") > 1).select("id")
    rows = [r.asDict() for r in ids.join(shared, "id").collect()]
    if not rows:
        return 0
    groups, shard_of = collision_groups(rows), {r[UID]: r["shard"] for r in rows}
    taken = set(groups)
    while True:  # a reassigned id must be free in the whole output, not only among the colliding rows
        new_ids = reassign_ids(groups, set(taken), id_bits)
        clash = {r.id for r in ids.filter(F.col("id").isin(list(new_ids.values()))).select("id").collect()}
        if not clash:
            break
        taken |= clash
    for shard in sorted({shard_of[u] for u in new_ids}):
        rewrite_ids(stage, shard, {u: i for u, i in new_ids.items() if shard_of[u] == shard})
    log.warning("annotate: %d id collisions resolved (ids reassigned: %s)", len(groups), new_ids)
    return len(new_ids)


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    opts = config.annotate
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)
    for path in (config.annotate.models, config.annotate.random_models):
        if path and spark is not None:  # the weights are read on the executors
            storage.check_shared(storage.absolute(path), spark.sparkContext.master, stage.storage, "[annotate] models")
    models = resolve_models(config)
    # torch threads per task = the cores Spark gives a task (PySpark's OMP_NUM_THREADS is the executor's)
    cpu_threads = int(spark.conf.get("spark.task.cpus", "1"))
    run_opts = RunOptions(device=opts.device, batch_size=opts.batch_size, decode_workers=opts.decode_workers,
                          cpu_threads=cpu_threads)
    columns = describe_columns(models)
    embeddings = embedding_section(opts.embeddings, models)

    def work(stage: StageDir, files: list[str]) -> Work:
        chunks = plan_chunks(files, opts.rows_per_shard, stage.storage)
        done = set(stage.completed_shards())
        todo = [c for c in chunks if c.shard not in done]
        log.info("annotate: %d input files, %d chunks to do -> %s", len(files), len(todo), stage.uri)
        for col, what in columns.items():
            log.info("  %-26s %s", col, what)
        task = partial(_annotate_partition, stage=stage, models=models, run=run_opts, id_bits=opts.id_bits, embeddings=embeddings)
        written = distribute(spark, [dataclasses.astuple(c) for c in todo], CHUNK_DDL, task, SHARD_STATS.spark_schema())
        log.info("annotate: wrote %d shards", sum(not r.skipped for r in written))
        planned = {c.shard for c in chunks}
        stage.require_markers(planned)
        moved = fix_id_collisions(spark, stage, opts.id_bits)
        extra = {**stats_extra(stage, columns, run_opts), "id_collisions_resolved": moved, "embeddings": embeddings}
        return Work(planned, extra)

    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     settings={"models": [dataclasses.asdict(models)] if dataclasses.is_dataclass(models) else str(models),
                               "embeddings": embeddings})
