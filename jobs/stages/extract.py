"""The extract stage's units of work, engine-agnostic: per-file extraction shards and per-bucket
uid-dedup shards. The Spark job (jobs/extract.py) only distributes these calls.

Phase A, one task per crawl file: ``_work/links/part-fNNNNNN.parquet`` (pairs before dedup) and
``rejected/part-fNNNNNN.parquet`` (links, records and files that failed, with a Reason).
Phase B, one task per uid bucket: ``data/part-bNNNNN.parquet`` (candidates, one row per uid, sorted)
and ``rejected/part-bNNNNN.parquet`` (duplicate_uid rows). Buckets come from the uid itself, so the
output does not depend on the engine or the partitioning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from curation.crawl.links import STAGE, ExtractRules
from curation.crawl.reader import collapse_duplicates, extract_file
from curation.stage import ShardStats, StageDir, read_parquet
from schemas import CANDIDATES, EXTRACTED_LINKS, UID

LINKS_DIR = "_work/links"


def file_shard(index: int) -> str:
    return f"part-f{index:06d}"


def bucket_shard(bucket: int) -> str:
    return f"part-b{bucket:05d}"


def extract_task(stage: StageDir, index: int, uri: str, rules: ExtractRules) -> ShardStats:
    """Extract one crawl file into its phase-A shard (skipped when its marker exists)."""
    shard = file_shard(index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    result = extract_file(uri, stage.storage, rules)
    return stage.write_shard(
        shard,
        result.links_table(),
        result.rejected_table(),
        rows_in=result.rows_in,
        kept_dir=LINKS_DIR,
        extra={"file": uri, "error": result.file_error, "records": result.records},
    )


def link_files(stage: StageDir) -> list[str]:
    return stage.files(LINKS_DIR)


def read_links_by_bucket(stage: StageDir, uris: Iterable[str], n_buckets: int, skip: set[int]) -> Iterator[pa.Table]:
    """Phase-A pairs with a ``bucket`` column, leaving out buckets already written."""
    for uri in uris:
        table = EXTRACTED_LINKS.conform(read_parquet(uri, stage.storage))
        if table.num_rows == 0:
            continue
        buckets = pa.array([int(u[:8], 16) % n_buckets for u in table.column(UID).to_pylist()], pa.int32())
        table = table.append_column("bucket", buckets)
        if skip:
            table = table.filter(pc.invert(pc.is_in(buckets, pa.array(sorted(skip), pa.int32()))))
        if table.num_rows:
            yield table


def dedup_task(stage: StageDir, bucket: int, links: pa.Table) -> ShardStats:
    """Collapse duplicate uids of one bucket into its final shard."""
    shard = bucket_shard(bucket)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    links = EXTRACTED_LINKS.conform(links)
    kept, rejected = collapse_duplicates(links)
    return stage.write_shard(shard, CANDIDATES.conform(kept), rejected, rows_in=links.num_rows)


def dedup_partition(stage: StageDir, table: pa.Table) -> list[ShardStats]:
    """All buckets present in one partition (a Spark partition may hold several)."""
    out = []
    buckets = table.column("bucket")
    for b in sorted(pc.unique(buckets).to_pylist()):
        out.append(dedup_task(stage, b, table.filter(pc.equal(buckets, b)).drop_columns(["bucket"])))
    return out


def file_errors(stage: StageDir) -> list[dict]:
    """Files that failed in whole or in part, from the phase-A markers."""
    errs = []
    for s in stage.completed_shards().values():
        if s.kept_dir == LINKS_DIR and s.extra.get("error"):
            errs.append({"file": s.extra["file"], "error": s.extra["error"]})
    return sorted(errs, key=lambda e: e["file"])


def stats_extra(stage: StageDir) -> dict:
    records: dict[str, int] = {}
    n_files = 0
    for s in stage.completed_shards().values():
        if s.kept_dir == LINKS_DIR:
            n_files += 1
            for k, v in s.extra.get("records", {}).items():
                records[k] = records.get(k, 0) + v
    return {"files": n_files, "records": dict(sorted(records.items())), "file_errors": file_errors(stage)}


__all__ = ["STAGE", "LINKS_DIR"]
