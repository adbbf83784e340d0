"""The banded join of dedup in Spark: hashes exploded into (band, key) rows, shuffled by (band, key),
paired and verified per task with filters.dedup's ``candidate_pairs``; never an all-pairs comparison."""

from __future__ import annotations

import logging
from functools import partial

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from filters.dedup import BANDS, PAIRS, VERDICT_COLUMNS, LinkRules, candidate_pairs, explode_bands, plan_bands
from jobs.partitions import whole_partition

log = logging.getLogger(__name__)


def _explode_partition(batches, plan, side: int):
    for batch in batches:
        yield from explode_bands(batch.column("hash").to_numpy(), plan, side).to_batches()

def _pairs_partition(batches, max_distance: int, cross: bool):
    table = whole_partition(batches)
    if table is not None:
        yield from candidate_pairs(table, max_distance, cross).to_batches()

def banded_pairs(left: DataFrame, right: DataFrame | None, links: LinkRules) -> tuple[DataFrame, dict]:
    """Pairs (a from left, b from right, or a < b both from left) within links.max_distance, checkpointed;
    each input is a DataFrame with a ``hash`` column (repeats allowed)."""
    left = left.select("hash").distinct().localCheckpoint()
    right = right.select("hash").distinct().localCheckpoint() if right is not None else None
    n_left, n_right = left.count(), (right.count() if right is not None else None)
    plan = plan_bands(links.max_distance, n_left, n_right, links.bands)
    rows = left.mapInArrow(partial(_explode_partition, plan=plan, side=0), BANDS.spark_schema())
    if right is not None:
        rows = rows.unionByName(right.mapInArrow(partial(_explode_partition, plan=plan, side=1), BANDS.spark_schema()))
    pairs = rows.repartition("band", "key").mapInArrow(
        partial(_pairs_partition, max_distance=links.max_distance, cross=right is not None), PAIRS.spark_schema()
    )
    pairs = pairs.dropDuplicates(["a", "b"]).localCheckpoint()
    info = {**plan.describe(), "hashes": n_left, "listed": n_right, "pairs": pairs.count()}
    log.info("dedup: banded join of %d hashes%s: %s", n_left, f" with {n_right} listed" if right is not None else "", info)
    return pairs, info

def window_pairs(keys: DataFrame, links: LinkRules) -> tuple[DataFrame, dict]:
    """filters.dedup.window_pairs in Spark: the banded join of the row keys (left) against the row keys
    and their window keys (right), each right hash mapped back to the row keys that own it."""
    owners = keys.select(F.col("phash").alias("b"), F.col("phash").alias("owner")).unionByName(
        keys.select(F.explode("windows").alias("b"), F.col("phash").alias("owner"))
    )
    pairs, info = banded_pairs(keys.select(F.col("phash").alias("hash")), owners.select(F.col("b").alias("hash")), links)
    linked = pairs.join(owners, "b").where(F.col("a") != F.col("owner")).select(
        F.least("a", "owner").alias("a"),
        F.greatest("a", "owner").alias("b"),
        F.struct("distance", (F.col("b") != F.col("owner")).alias("window")).alias("link"),  # b: owner's key or window
    )
    edges = linked.groupBy("a", "b").agg(F.min("link").alias("link"))
    edges = edges.select("a", "b", "link.distance", "link.window").localCheckpoint()
    info["pairs"] = edges.count()
    return edges, info

def closest_links(links: DataFrame) -> DataFrame:
    """filters.dedup.closest_links in Spark: (node, other, distance, window[, occluded, inliers, cells]) per
    key of a link (LINKS or VERIFIED_LINKS), the same order: distance, window, occluded, other."""
    order = ["distance", "window", *(["occluded"] if "occluded" in links.columns else [])]
    verdict = [c for c in VERDICT_COLUMNS if c in links.columns]
    both = links.select(F.col("a").alias("node"), F.col("b").alias("other"), *order, *verdict).unionByName(
        links.select(F.col("b").alias("node"), F.col("a").alias("other"), *order, *verdict)
    )
    best = both.groupBy("node").agg(F.min(F.struct(*order, "other", *verdict)).alias("best"))
    return best.select("node", "best.other", *[f"best.{c}" for c in (*order, *verdict)])
