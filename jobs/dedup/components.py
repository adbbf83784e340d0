"""Connected components of an edge set (a, b) in Spark or on the driver, for dedup's near-duplicate groups.

Up to ``jobs.dedup.decide.DRIVER_EDGES_LIMIT`` pairs they are collected and labelled with scipy on the
driver (a Spark round trip costs seconds even for a handful of edges); beyond that, by alternating
large-star / small-star rounds in Spark (Kiveris et al., "Connected Components in MapReduce and Beyond",
2014): O(log^2 n) rounds of joins and group-bys, each edge set checkpointed, so the corpus never has to
fit in the driver. Both label every node with the smallest hash of its component: the same result.
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from filters.dedup import components

MAX_COMPONENT_ROUNDS = 100


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
