"""Spark side of dedup's global decisions (phase B): every step is a shuffle keyed so that each group
lands whole in one task, where filters.dedup's pure functions decide; plus connected components.

- blocklist and near-duplicate candidates: hashes exploded into (band, key) rows, shuffled by
  (band, key), paired and verified per task (``candidate_pairs``); never an all-pairs comparison;
- (pHash, text) and pHash duplicates: rows shuffled by pHash, collapsed per task (``collapse_exact``);
- near-duplicate groups: connected components of the verified pairs. Up to ``DRIVER_EDGES_LIMIT``
  pairs (~50 MB) they are collected and labelled with scipy on the driver (a Spark round trip costs
  seconds even for a handful of edges); beyond that, by alternating large-star / small-star rounds
  in Spark (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014): O(log^2 n) rounds of
  joins and group-bys, each edge set checkpointed, so the corpus never has to fit in the driver. Both
  label every node with the smallest hash of its component: the same result;
- one row kept per component: rows shuffled by component, collapsed per task (``collapse_components``;
  the detail of a dropped row names its closest link, ``closest_links``).
"""

from __future__ import annotations

import logging
from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from filters.dedup import (
    BANDS,
    DECISIONS,
    KEYS,
    KEYS_DECIDED,
    MATCHES,
    PAIRS,
    DedupRules,
    as_decisions,
    candidate_pairs,
    closest_matches,
    collapse_components,
    collapse_exact,
    components,
    explode_bands,
    plan_bands,
    uses_windows,
    with_decision,
)
from jobs.partitions import whole_partition
from schemas import Reason

log = logging.getLogger(__name__)

MAX_COMPONENT_ROUNDS = 100
DRIVER_EDGES_LIMIT = 2_000_000


def _explode_partition(batches, plan, side: int):
    for batch in batches:
        yield from explode_bands(batch.column("hash").to_numpy(), plan, side).to_batches()


def _pairs_partition(batches, max_distance: int, cross: bool):
    table = whole_partition(batches)
    if table is not None:
        yield from candidate_pairs(table, max_distance, cross).to_batches()


def banded_pairs(left: DataFrame, right: DataFrame | None, rules: DedupRules) -> tuple[DataFrame, dict]:
    """Pairs (a from left, b from right, or a < b both from left) within rules.max_distance, checkpointed;
    each input is a DataFrame with a ``hash`` column (repeats allowed)."""
    left = left.select("hash").distinct().localCheckpoint()
    right = right.select("hash").distinct().localCheckpoint() if right is not None else None
    n_left, n_right = left.count(), (right.count() if right is not None else None)
    plan = plan_bands(rules.max_distance, n_left, n_right, rules.bands)
    rows = left.mapInArrow(partial(_explode_partition, plan=plan, side=0), BANDS.spark_schema())
    if right is not None:
        rows = rows.unionByName(right.mapInArrow(partial(_explode_partition, plan=plan, side=1), BANDS.spark_schema()))
    pairs = rows.repartition("band", "key").mapInArrow(
        partial(_pairs_partition, max_distance=rules.max_distance, cross=right is not None), PAIRS.spark_schema()
    )
    pairs = pairs.dropDuplicates(["a", "b"]).localCheckpoint()
    info = {**plan.describe(), "hashes": n_left, "listed": n_right, "pairs": pairs.count()}
    log.info("dedup: banded join of %d hashes%s: %s", n_left, f" with {n_right} listed" if right is not None else "", info)
    return pairs, info


def window_pairs(keys: DataFrame, rules: DedupRules) -> tuple[DataFrame, dict]:
    """filters.dedup.window_pairs in Spark: the banded join of the row keys (left) against the row keys
    and their window keys (right), each right hash mapped back to the row keys that own it."""
    owners = keys.select(F.col("phash").alias("b"), F.col("phash").alias("owner")).unionByName(
        keys.select(F.explode("windows").alias("b"), F.col("phash").alias("owner"))
    )
    pairs, info = banded_pairs(keys.select(F.col("phash").alias("hash")), owners.select(F.col("b").alias("hash")), rules)
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
    """filters.dedup.closest_links in Spark: (node, other, distance, window) per key of a link."""
    both = links.select(F.col("a").alias("node"), F.col("b").alias("other"), "distance", "window").unionByName(
        links.select(F.col("b").alias("node"), F.col("a").alias("other"), "distance", "window")
    )
    best = both.groupBy("node").agg(F.min(F.struct("distance", "window", "other")).alias("best"))
    return best.select("node", "best.other", "best.distance", "best.window")


def _edges(df: DataFrame, p: str, q: str) -> DataFrame:
    """Undirected edges as (u < v), self-loops dropped, each once."""
    return (
        df.where(F.col(p) != F.col(q))
        .select(F.least(p, q).alias("u"), F.greatest(p, q).alias("v"))
        .distinct()
    )


def _both_ways(edges: DataFrame) -> DataFrame:
    return edges.select(F.col("u").alias("x"), F.col("v").alias("y")).unionByName(
        edges.select(F.col("v").alias("x"), F.col("u").alias("y"))
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """Each node's larger neighbours are linked to the smallest node of its closed neighbourhood."""
    nb = _both_ways(edges)
    low = nb.groupBy("x").agg(F.least(F.min("y"), F.col("x")).alias("m"))
    linked = nb.where(F.col("y") > F.col("x")).join(low, "x").select(F.col("y").alias("p"), F.col("m").alias("q"))
    return _edges(linked, "p", "q")


def _small_star(edges: DataFrame) -> DataFrame:
    """Each node and its smaller neighbours are linked to the smallest of them."""
    smaller = _both_ways(edges).where(F.col("y") < F.col("x"))
    low = smaller.groupBy("x").agg(F.min("y").alias("m"))
    linked = smaller.join(low, "x").select(F.col("y").alias("p"), F.col("m").alias("q"))
    linked = linked.unionByName(low.select(F.col("x").alias("p"), F.col("m").alias("q")))
    return _edges(linked, "p", "q")


def components_on_driver(pairs: DataFrame) -> DataFrame:
    """(node, label) with scipy, for edge sets that fit the driver comfortably."""
    table = pairs.select("a", "b").toArrow()
    label = components(table.column("a").to_numpy(), table.column("b").to_numpy())
    rows = pa.table({"node": pa.array(list(label), pa.int64()), "label": pa.array(list(label.values()), pa.int64())})
    return pairs.sparkSession.createDataFrame(rows, "node long, label long")


def connected_components(pairs: DataFrame) -> tuple[DataFrame, int]:
    """(node, label = smallest node of its component) for every node of an edge (a, b), in Spark
    (large-star / small-star); and the rounds it took."""
    edges = _edges(pairs, "a", "b").localCheckpoint()
    for rounds in range(1, MAX_COMPONENT_ROUNDS + 1):
        after = _small_star(_large_star(edges)).localCheckpoint()
        if after.count() == edges.count() and after.exceptAll(edges).isEmpty():
            break
        edges = after
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_COMPONENT_ROUNDS} rounds")
    labels = edges.select(F.col("v").alias("node"), F.col("u").alias("label")).unionByName(
        edges.select(F.col("u").alias("node"), F.col("u").alias("label"))
    )
    return labels.groupBy("node").agg(F.min("label").alias("label")), rounds


def _closest_partition(batches):
    table = whole_partition(batches)
    if table is not None:
        yield from closest_matches(table).to_batches()


def _collapse_exact_partition(batches, rules: DedupRules):
    table = whole_partition(batches)
    if table is not None:
        kept, dropped = collapse_exact(table, rules)
        yield from pa.concat_tables([with_decision(kept, None), dropped]).to_batches()


def _collapse_component_partition(batches, key: str):
    table = whole_partition(batches)
    if table is not None:
        yield from as_decisions(collapse_components(table, key)).to_batches()


def _as_decisions(df: DataFrame, reason: Reason | None = None) -> DataFrame:
    if reason is not None:
        df = df.withColumn("reason", F.lit(str(reason)))
    return df.select(*DECISIONS.names)


def decide(keys: DataFrame, rules: DedupRules, blocklist: DataFrame | None) -> tuple[DataFrame, dict]:
    """Decisions (DECISIONS rows: rejected rows only) for KEYS rows, the steps of filters.dedup."""
    info: dict = {}
    decided: list[DataFrame] = []
    keys = keys.where(~F.coalesce(F.col("blank"), F.lit(False)))  # blank rows take no part (filters.dedup)
    if blocklist is not None:
        pairs, info["blocklist_join"] = banded_pairs(keys.select(F.col("phash").alias("hash")), blocklist, rules)
        matched = pairs.join(blocklist.withColumnRenamed("hash", "b"), "b").repartition("a")
        matches = matched.mapInArrow(_closest_partition, MATCHES.spark_schema()).localCheckpoint()
        decided.append(_as_decisions(keys.join(matches, "phash"), Reason.EVAL_SET_MATCH))
        keys = keys.join(matches.select("phash"), "phash", "left_anti")
    if rules.key == "robust":  # the later steps group on the robust key: swap it into the phash column
        swap = {"phash": "robust", "robust": "phash"}
        keys = keys.select(*[F.col(swap.get(c, c)).alias(c) for c in KEYS.names])
    if rules.pairs or rules.exact:
        collapsed = keys.repartition("phash").mapInArrow(
            partial(_collapse_exact_partition, rules=rules), KEYS_DECIDED.spark_schema()
        ).localCheckpoint()
        decided.append(_as_decisions(collapsed.where(F.col("reason").isNotNull())))
        keys = collapsed.where(F.col("reason").isNull()).select(*KEYS.names)
    if rules.max_distance > 0:
        if uses_windows(rules):
            pairs, info["near_join"] = window_pairs(keys, rules)
        else:
            pairs, info["near_join"] = banded_pairs(keys.select(F.col("phash").alias("hash")), None, rules)
            pairs = pairs.withColumn("window", F.lit(False))
        if info["near_join"]["pairs"] <= DRIVER_EDGES_LIMIT:
            labels, info["components_on"] = components_on_driver(pairs), "driver"
        else:
            (labels, info["component_rounds"]), info["components_on"] = connected_components(pairs), "spark"
        log.info("dedup: near-duplicate components labelled on the %s", info["components_on"])
        # a row whose hash has no pair is alone in its component: only the others are collapsed
        grouped = keys.join(labels, keys.phash == labels.node).select(*KEYS.names, F.col("label").alias("component"))
        links = closest_links(pairs)  # the detail of a dropped row names its closest link
        grouped = grouped.join(links, grouped.phash == links.node, "left").drop("node")
        decided.append(
            grouped.repartition("component").mapInArrow(
                partial(_collapse_component_partition, key=rules.key), DECISIONS.spark_schema()
            )
        )
    if not decided:
        return keys.sparkSession.createDataFrame([], DECISIONS.spark_schema()), info
    out = decided[0]
    for d in decided[1:]:
        out = out.unionByName(d)
    return out, info
