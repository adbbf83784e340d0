"""Spark side of the candidate verification ([dedup.rules.links] verify, [dedup.rules.keys] occlusion_windows): the
occlusion candidates (a banded self-join of the occlusion window keys, mapped back to their rows) and
the verification of candidate pairs in a mapInArrow over the pairs, with the keypoints of both ends
joined on by key; the pure rule is filters.dedup.verify_links, as in the in-memory reference."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from filters.dedup import CANDIDATE_LINKS, CANDIDATE_LINKS_SCHEMA, VERDICT_COLUMNS, VERIFIED_LINKS, LinkRules, verify_links
from jobs.dedup.bands import banded_pairs


def _verify_partition(batches, rules: LinkRules):
    for batch in batches:
        yield from verify_links(pa.Table.from_batches([batch]).cast(CANDIDATE_LINKS_SCHEMA), rules).to_batches()


def occlusion_links(keys: DataFrame, links: DataFrame, rules: LinkRules) -> tuple[DataFrame, dict]:
    """filters.dedup.occlusion_links + with_occlusion: ``links`` with ``occluded`` false, plus the
    pairs of rows (a < b, distance = their keys') whose occlusion window keys are within
    occlusion_distance, or equal, and that ``links`` lacks (``occluded`` true)."""
    owners = keys.select(F.explode("occlusion").alias("w"), F.col("phash").alias("owner")).localCheckpoint()
    near = replace(rules, max_distance=rules.occlusion_distance, bands=0, verify=False)
    pairs, info = banded_pairs(owners.select(F.col("w").alias("hash")), None, near)
    ends = [owners.select(F.col("w").alias(end), F.col("owner").alias(f"o{end}")) for end in ("a", "b")]
    through = pairs.join(ends[0], "a").join(ends[1], "b").select("oa", "ob")
    same = ends[0].join(ends[1], F.col("a") == F.col("b")).select("oa", "ob")
    rows = through.unionByName(same).where(F.col("oa") != F.col("ob"))
    rows = rows.select(F.least("oa", "ob").alias("a"), F.greatest("oa", "ob").alias("b")).distinct()
    rows = rows.join(links.select("a", "b"), ["a", "b"], "left_anti").select(
        "a", "b", F.bit_count(F.col("a").bitwiseXOR(F.col("b"))).cast("int").alias("distance"),
        F.lit(False).alias("window"), F.lit(True).alias("occluded"),
    )
    out = links.select("a", "b", "distance", "window", F.lit(False).alias("occluded")).unionByName(rows).localCheckpoint()
    return out, {**info, "occlusion_candidates": out.where("occluded").count()}


def verified_links(keys: DataFrame, links: DataFrame, rules: LinkRules) -> tuple[DataFrame, dict]:
    """VERIFIED_LINKS: the links that filters.dedup.verify_links keeps. Only the links that need a verdict
    (filters.dedup.needs_verdict: an occlusion candidate, or keys farther apart than verify_link_distance)
    get the keypoints of both ends joined on (by key: after the exact steps, one row per key) and go
    through verify_links; the others are linked as they are, with null verdict columns, as verify_links
    would (a few KB of keypoints per end are not shuffled for them)."""
    if "occluded" not in links.columns:
        links = links.withColumn("occluded", F.lit(False))
    needs = F.col("occluded") | (F.col("distance") > F.lit(rules.verify_link_distance))  # = needs_verdict
    direct = links.where(~needs).select(
        "a", "b", "distance", "window", "occluded",
        *[F.lit(None).cast(VERIFIED_LINKS.spark_schema()[c].dataType).alias(c) for c in VERDICT_COLUMNS],
    )
    pending = links.where(needs)
    info = {"candidates": links.count(), "pairs_checked": pending.count()}  # before the keypoints are joined on
    features = keys.select(F.col("phash").alias("k"), "features")
    for end in ("a", "b"):
        pending = pending.join(features.select(F.col("k").alias(end), F.col("features").alias(f"features_{end}")), end, "left")
    checked = pending.select(*CANDIDATE_LINKS.names).mapInArrow(partial(_verify_partition, rules=rules), VERIFIED_LINKS.spark_schema())
    verified = direct.select(*VERIFIED_LINKS.names).unionByName(checked).localCheckpoint()
    return verified, {**info, "pairs": verified.count()}
