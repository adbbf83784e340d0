"""Spark side of dedup's global decisions (phase B): the steps of filters.dedup, in the order
``filters.dedup.steps.run_steps`` gives, on DataFrames. Every step is a shuffle keyed so that each group
lands whole in one task, where filters.dedup's pure functions decide:

- blocklist and near-duplicate candidates: the banded join (``jobs.dedup.bands``);
- (pHash, text) and pHash duplicates: rows shuffled by pHash, collapsed per task (``collapse_exact``);
- near-duplicate groups: connected components of the verified pairs (``jobs.dedup.components``), on the
  driver up to ``DRIVER_EDGES_LIMIT`` pairs (~50 MB), in Spark beyond;
- one row kept per component: rows shuffled by component, collapsed per task (``collapse_components``;
  the detail of a dropped row names its closest link, ``closest_links``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from filters.dedup import (
    DECISIONS,
    KEYS,
    KEYS_DECIDED,
    MATCHES,
    DedupRules,
    LinkRules,
    as_decisions,
    closest_matches,
    collapse_components,
    collapse_exact,
    run_steps,
    uses_windows,
    with_decision,
)
from jobs.dedup.bands import banded_pairs, closest_links, window_pairs
from jobs.dedup.components import components_on_driver, connected_components
from jobs.dedup.verify import occlusion_links, verified_links
from jobs.partitions import whole_partition
from schemas import REASON, Reason

log = logging.getLogger(__name__)

DRIVER_EDGES_LIMIT = 2_000_000


def _closest_partition(batches):
    table = whole_partition(batches)
    if table is not None:
        yield from closest_matches(table).to_batches()


def _collapse_exact_partition(batches, links: LinkRules):
    table = whole_partition(batches)
    if table is not None:
        kept, dropped = collapse_exact(table, links)
        yield from pa.concat_tables([with_decision(kept, None), dropped]).to_batches()


def _collapse_component_partition(batches, key: str):
    table = whole_partition(batches)
    if table is not None:
        yield from as_decisions(collapse_components(table, key)).to_batches()


def _as_decisions(df: DataFrame, reason: Reason | None = None) -> DataFrame:
    if reason is not None:
        df = df.withColumn(REASON, F.lit(str(reason)))
    return df.select(*DECISIONS.names)


@dataclass
class SparkSteps:
    """The steps on DataFrames of KEYS rows; ``decided`` collects DECISIONS DataFrames, ``info`` the joins."""

    rules: DedupRules
    decided: list[DataFrame] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def without_blank(self, keys: DataFrame) -> DataFrame:
        return keys.where(~F.coalesce(F.col("blank"), F.lit(False)))

    def reject_blocklisted(self, keys: DataFrame, blocklist: DataFrame) -> DataFrame:
        pairs, self.info["blocklist_join"] = banded_pairs(keys.select(F.col("phash").alias("hash")), blocklist, self.rules.links)
        matched = pairs.join(blocklist.withColumnRenamed("hash", "b"), "b").repartition("a")
        matches = matched.mapInArrow(_closest_partition, MATCHES.spark_schema()).localCheckpoint()
        self.decided.append(_as_decisions(keys.join(matches, "phash"), Reason.EVAL_SET_MATCH))
        return keys.join(matches.select("phash"), "phash", "left_anti")

    def on_key(self, keys: DataFrame, swap: dict[str, str]) -> DataFrame:
        return keys.select(*[F.col(swap.get(c, c)).alias(c) for c in KEYS.names]) if swap else keys

    def collapse_exact(self, keys: DataFrame) -> DataFrame:
        collapsed = keys.repartition("phash").mapInArrow(
            partial(_collapse_exact_partition, links=self.rules.links), KEYS_DECIDED.spark_schema()
        ).localCheckpoint()
        self.decided.append(_as_decisions(collapsed.where(F.col(REASON).isNotNull())))
        return collapsed.where(F.col(REASON).isNull()).select(*KEYS.names)

    def near_links(self, keys: DataFrame) -> DataFrame:
        if uses_windows(self.rules):
            pairs, self.info["near_join"] = window_pairs(keys, self.rules.links)
            return pairs
        pairs, self.info["near_join"] = banded_pairs(keys.select(F.col("phash").alias("hash")), None, self.rules.links)
        return pairs.withColumn("window", F.lit(False))

    def occlusion_links(self, keys: DataFrame, links: DataFrame) -> DataFrame:
        links, self.info["occlusion_join"] = occlusion_links(keys, links, self.rules.links)
        return links

    def verify_links(self, keys: DataFrame, links: DataFrame) -> DataFrame:
        links, self.info["verified"] = verified_links(keys, links, self.rules.links)
        return links

    def collapse_near(self, keys: DataFrame, pairs: DataFrame) -> None:
        rules, info = self.rules, self.info
        edges = info.get("verified", info["near_join"])["pairs"]
        if edges <= DRIVER_EDGES_LIMIT:
            labels, info["components_on"] = components_on_driver(pairs), "driver"
        else:
            (labels, info["component_rounds"]), info["components_on"] = connected_components(pairs), "spark"
        log.info("dedup: near-duplicate components labelled on the %s", info["components_on"])
        # a row whose hash has no pair is alone in its component: only the others are collapsed
        grouped = keys.join(labels, keys.phash == labels.node).select(*KEYS.names, F.col("label").alias("component"))
        links = closest_links(pairs)  # the detail of a dropped row names its closest link
        grouped = grouped.join(links, grouped.phash == links.node, "left").drop("node")
        self.decided.append(
            grouped.repartition("component").mapInArrow(
                partial(_collapse_component_partition, key=rules.keys.key), DECISIONS.spark_schema()
            )
        )


def decide(keys: DataFrame, rules: DedupRules, blocklist: DataFrame | None) -> tuple[DataFrame, dict]:
    """Decisions (DECISIONS rows: rejected rows only) for KEYS rows, the steps of filters.dedup."""
    engine = SparkSteps(rules)
    run_steps(engine, keys, rules, blocklist)
    if not engine.decided:
        return keys.sparkSession.createDataFrame([], DECISIONS.spark_schema()), engine.info
    out = engine.decided[0]
    for d in engine.decided[1:]:
        out = out.unionByName(d)
    return out, engine.info
