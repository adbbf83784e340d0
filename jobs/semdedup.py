"""Spark job of the semdedup stage: annotated -> annotated without semantic duplicates. Thin: it
distributes jobs.stages.semdedup (sample -> k-means on the driver -> assignment per file -> decisions per
cluster -> one output shard per input file)."""

from __future__ import annotations

import logging
import time
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.stages.config import Config
from curation.lifecycle import Work, input_files, run_stage
from jobs.stages.semdedup import (
    ASSIGNED_DDL, DECISIONS_DDL, SPEC, STAGE, apply_task, assign, binary_matrix, check_embeddings, decide_partition,
    embedding_bytes, load_centroids, read_file, read_histogram, sample_rows, save_centroids, shard_name, total_rows,
    train_centroids, write_histogram,
)
from curation.stage import StageDir, shard_stats_batch
from jobs.partitions import MAX_TASKS, as_list, run_context, spread, whole_partition
from schemas import SHARD_STATS, UID

log = logging.getLogger(__name__)


def _files(spark: SparkSession, files: list[str]) -> DataFrame:
    return spread(spark, list(enumerate(files)), "index int, uri string")


def _sample_partition(batches, fraction: float, keep_by: str, options):
    for batch in batches:
        for uri in batch.column("uri").to_pylist():
            table, emb = read_file(uri, keep_by, options)
            uids, rows = sample_rows(table.column(UID).to_pylist(), emb, fraction)
            yield pa.RecordBatch.from_arrays([pa.array(uids, pa.string()), embedding_bytes(rows)], [UID, "emb"])


def _assign_partition(batches, centroids: np.ndarray, keep_by: str, block_rows: int, options):
    for batch in batches:
        for index, uri in zip(batch.column("index").to_pylist(), batch.column("uri").to_pylist()):
            table, emb = read_file(uri, keep_by, options)
            clusters = assign(emb, centroids, block_rows)
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(table.num_rows, index, np.int32)), table.column(UID).combine_chunks(),
                 table.column("score").combine_chunks(), pa.array(clusters), embedding_bytes(emb)],
                ["file_index", UID, "score", "cluster", "emb"],
            )


def _decide(batches, eps: float, block_rows: int):
    table = whole_partition(batches)
    if table is not None:
        yield from decide_partition(table, eps, block_rows).to_batches()


def _apply_partition(batches, stage: StageDir, files: list[str]):
    table = whole_partition(batches)
    if table is None:
        return
    indices = sorted(set(table.column("file_index").to_pylist()))
    table = table.filter(table.column(UID).is_valid())  # drop the one-per-file markers
    yield shard_stats_batch([apply_task(stage, i, files[i], table.filter(pc.equal(table.column("file_index"), i)))
                             for i in indices])


def centroids_for(spark: SparkSession, stage: StageDir, files: list[str], config: Config) -> np.ndarray:
    """The stage's k-means centroids: the saved ones on a resumed run, else trained on a uid-hash sample."""
    opts = config.semdedup
    saved = load_centroids(stage)
    if saved is not None:
        return saved
    total = total_rows(files, stage.storage)
    fraction = min(1.0, opts.train_sample / max(total, 1))
    sample = _files(spark, files).mapInArrow(
        partial(_sample_partition, fraction=fraction, keep_by=opts.keep_by, options=stage.storage), "uid string, emb binary"
    ).toArrow().sort_by(UID)
    log.info("semdedup: training k-means (%d clusters asked) on %d of %d rows", opts.clusters, sample.num_rows, total)
    centroids = train_centroids(binary_matrix(sample.column("emb")), opts.clusters, opts.iterations, opts.seed)
    save_centroids(stage, centroids)
    return centroids


def _decide_and_apply(spark: SparkSession, stage: StageDir, files: list[str], config: Config) -> None:
    opts = config.semdedup
    todo = [i for i in range(len(files)) if not stage.has_shard(shard_name(i))]
    if not todo:
        return
    started = time.perf_counter()
    centroids = centroids_for(spark, stage, files, config)
    log.info("semdedup: %d centroids ready in %.1fs", len(centroids), time.perf_counter() - started)
    assigned = _files(spark, files).mapInArrow(
        partial(_assign_partition, centroids=centroids, keep_by=opts.keep_by, block_rows=opts.block_rows, options=stage.storage),
        ASSIGNED_DDL,
    )
    partitions = opts.partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    decisions = assigned.repartition(partitions, "cluster").mapInArrow(
        partial(_decide, eps=opts.eps, block_rows=opts.block_rows), DECISIONS_DDL
    ).localCheckpoint()
    _histogram(stage, decisions, opts.histogram_bins)
    log.info("semdedup: assignment and per-cluster decisions done at %.1fs", time.perf_counter() - started)
    rejected = decisions.where(F.col("kept_uid").isNotNull() & F.col("file_index").isin(todo))
    markers = spark.createDataFrame([(i, None, None, None) for i in todo], "file_index int, uid string, kept_uid string, similarity float")
    written = rejected.select("file_index", UID, "kept_uid", "similarity").unionByName(markers).repartition(
        min(len(todo), MAX_TASKS), "file_index"
    ).mapInArrow(partial(_apply_partition, stage=stage, files=files), SHARD_STATS.spark_schema()).collect()
    log.info("semdedup: wrote %d shards (%d clusters)", sum(not r.skipped for r in written), len(centroids))


def _histogram(stage: StageDir, decisions: DataFrame, bins: int) -> None:
    """Each row's nearest-neighbour cosine in its cluster, counted per bin of [-1, 1]."""
    index = F.least(F.floor((F.col("nn_similarity") + 1.0) / 2.0 * bins).cast("int"), F.lit(bins - 1))
    rows = decisions.where(F.col("nn_similarity") > -1.0).groupBy(index.alias("bin")).count().collect()
    write_histogram(stage, {r["bin"]: r["count"] for r in rows}, bins)


def run(spark: SparkSession, inputs: str | list[str], output: str, config: Config, overwrite: bool = False,
        redo_stale: bool = False) -> dict:
    opts = config.semdedup
    stage = StageDir(output, STAGE, config.storage.resolved())
    files = input_files(SPEC, as_list(inputs), stage.storage)
    check_embeddings(files, stage.storage)
    log.info("semdedup: %d input files -> %s (eps %.3f, %d clusters, keep by %s)", len(files), stage.uri, opts.eps,
             opts.clusters, opts.keep_by)

    def work(stage: StageDir, files: list[str]) -> Work:
        _decide_and_apply(spark, stage, files, config)
        centroids = load_centroids(stage)
        extra = {"clusters": 0 if centroids is None else len(centroids), "eps": opts.eps, "keep_by": opts.keep_by,
                 "nn_similarity_histogram": read_histogram(stage)}
        return Work({shard_name(i) for i in range(len(files))}, extra)

    settings = {"semdedup": config.to_dict()["semdedup"]}
    return run_stage(SPEC, stage, files, work, config=config.to_dict(), context=run_context(spark, overwrite, redo_stale),
                     settings=settings)
