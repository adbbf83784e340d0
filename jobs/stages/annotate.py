"""The annotate stage's units of work, engine-agnostic: unique -> annotated, one shard per input chunk.

Each input parquet file is cut into chunks of at most ``rows_per_shard`` rows (by row group, so a chunk
is read without the rest of the file); chunk k of input file i is written as ``part-IIIII-KKKK``. Every
input row ends as an annotated row or as a ``not_decodable`` rejected row. The Spark job
(jobs/annotate.py) only distributes these calls.

``id`` (COYO's long): the top 63 bits of md5(uid), a non-negative long that depends on the uid alone.
The job checks the ids of the whole output for collisions (about a 3 % chance at 700 M rows); in a
colliding group the smallest uid keeps its id and each other uid takes md5(uid + "#1"), "#2", ... (the
first that is free), then the affected shards are rewritten. So the ids depend only on the set of uids.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.output.embeddings import EMBEDDING_MODELS, write_embeddings
from curation.errors import InputError
from curation.lifecycle import StageSpec
from curation.stage import DATA, REJECTED_DIR, ShardStats, StageDir, read_parquet, rejected_table
from curation.storage import StorageOptions
from models.config import ModelsConfig
from models.registry import SCORE_COLUMNS
from models.runner import RunOptions, Scored, get_runner, place
from schemas import ANNOTATED, DETAIL, REASON, UID, Reason

log = logging.getLogger(__name__)

STAGE = "annotate"
# reads the dedup stage's output (or parquet files with its columns)
INPUT_COLUMNS = (UID, "url", "text", "width", "height", "image_bytes", "image_phash", "sha256", "md5")
SPEC = StageSpec(STAGE, upstream="dedup", input_columns=INPUT_COLUMNS, finished_input=False)
ID_BITS = 63


# --- ids and text statistics -----------------------------------------------------------------
def row_id(uid: str, salt: int = 0, bits: int = ID_BITS) -> int:
    """Top ``bits`` bits of md5(uid) (md5(uid#salt) for salt > 0): a non-negative long."""
    key = uid if salt == 0 else f"{uid}#{salt}"
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest()[:8], "big") >> (64 - bits)


def text_length(texts: list[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], np.int32)


def word_count(texts: list[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], np.int32)


# --- planning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    file_index: int
    uri: str
    chunk: int
    start: int
    stop: int

    @property
    def shard(self) -> str:
        return f"part-{self.file_index:05d}-{self.chunk:04d}"


def plan_chunks(files: list[str], rows_per_shard: int, options: StorageOptions | None = None) -> list[Chunk]:
    chunks = []
    for i, uri in enumerate(files):
        rows = _parquet_file(uri, options).metadata.num_rows
        for k in range(max(1, math.ceil(rows / rows_per_shard))):
            chunks.append(Chunk(i, uri, k, k * rows_per_shard, min(rows, (k + 1) * rows_per_shard)))
    return chunks


def _parquet_file(uri: str, options: StorageOptions | None) -> pq.ParquetFile:
    fs, path = storage.filesystem(uri, options)
    return pq.ParquetFile(fs.open_input_file(path))


def read_chunk(chunk: Chunk, options: StorageOptions | None = None) -> pa.Table:
    """Rows [start, stop) of the chunk's file, reading only the row groups that hold them."""
    pf = _parquet_file(chunk.uri, options)
    missing = [c for c in INPUT_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"{chunk.uri} lacks columns {missing} (annotate reads the dedup stage's output: unique)")
    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > chunk.start and offset < chunk.stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table().select(list(INPUT_COLUMNS))
    table = pf.read_row_groups(groups, columns=list(INPUT_COLUMNS))
    return table.slice(chunk.start - first, chunk.stop - chunk.start)


# --- one chunk ---------------------------------------------------------------------------------
def annotated_table(table: pa.Table, scored: Scored, id_bits: int = ID_BITS) -> pa.Table:
    """The kept rows of ``table`` (those scored) as an ANNOTATED table; unfilled score columns are null."""
    kept = table.filter(pa.array(scored.ok))
    texts = kept.column("text").to_pylist()
    n = kept.num_rows
    columns = {
        "id": pa.array([row_id(u, bits=id_bits) for u in kept.column(UID).to_pylist()], pa.int64()),
        "url": kept.column("url"),
        "text": kept.column("text"),
        "width": kept.column("width"),
        "height": kept.column("height"),
        "image_phash": kept.column("image_phash"),
        "text_length": pa.array(text_length(texts)),
        "word_count": pa.array(word_count(texts)),
        UID: kept.column(UID),
        "image_bytes": kept.column("image_bytes"),
        "sha256": kept.column("sha256"),
        "md5": kept.column("md5"),
    }
    schema = ANNOTATED.arrow_schema()
    for col in SCORE_COLUMNS:
        values = scored.columns.get(col)
        kind = schema.field(col).type
        columns[col] = pa.array(values, kind) if values is not None else pa.nulls(n, kind)
    return ANNOTATED.conform(pa.table(columns))


def rejected_rows(table: pa.Table, scored: Scored) -> list[dict]:
    uids = table.column(UID).to_pylist()
    return [
        {UID: uid, REASON: Reason.NOT_DECODABLE, DETAIL: err}
        for uid, err in zip(uids, scored.errors)
        if err is not None
    ]


def null_counts(table: pa.Table) -> dict[str, int]:
    return {c: table.column(c).null_count for c in SCORE_COLUMNS}


def embedding_section(choice: str, models: ModelsConfig) -> str | None:
    """[annotate] embeddings -> the CLIP section whose embeddings are written (None: none)."""
    if choice == "auto":
        return "clip_vitb32" if models.clip_vitb32 else None
    if choice == "none":
        return None
    section = EMBEDDING_MODELS[choice]
    if getattr(models, section) is None:
        raise InputError(f"[annotate] embeddings = {choice!r} but [{section}] is not configured in the models file")
    return section


def annotate_task(
    stage: StageDir,
    chunk: Chunk,
    models: ModelsConfig,
    run: RunOptions,
    id_bits: int = ID_BITS,
    embeddings: str | None = None,
    gpus: tuple[str, ...] = (),
) -> ShardStats:
    """Annotate one chunk into its shard (skipped when its marker exists). ``embeddings``: the CLIP
    section whose image/text embeddings are written (curation/output/embeddings.py), before the marker.
    ``gpus``: the GPU addresses the engine assigned this task (Spark's task resources); the models run
    on the first (models.runner.place), and the marker records the device and the addresses."""
    if stage.has_shard(chunk.shard):
        return ShardStats(chunk.shard, 0, 0, extra={"skipped": True})
    began = time.time()
    placement = place(run.device, gpus)
    if placement.note:
        log.warning("annotate %s: %s", chunk.shard, placement.note)
    runner = get_runner(models, replace(run, device=placement.device), stage.storage)
    table = read_chunk(chunk, stage.storage)
    started = time.perf_counter()
    keys = (f"{embeddings}.image_embedding", f"{embeddings}.text_embedding") if embeddings else ()
    scored = runner.score(table.column("image_bytes").to_pylist(), table.column("text").to_pylist(), features=keys)
    elapsed = time.perf_counter() - started
    kept = annotated_table(table, scored, id_bits)
    if embeddings:
        image, text = (scored.features[k] for k in keys)
        write_embeddings(stage.uri, chunk.shard, kept, image, text, stage.storage)
    extra = {
        "file": chunk.uri,
        "rows": [chunk.start, chunk.stop],
        "device": runner.device,
        "gpu_assigned": list(placement.assigned),
        "device_note": placement.note,
        "task_window": [round(began, 3), round(time.time(), 3)],  # wall clock: which tasks ran at once
        "nulls": null_counts(kept),
        "seconds": round(elapsed, 3),
        "scorer_seconds": {k: round(v, 3) for k, v in scored.seconds.items()},
    }
    log.info("annotate %s: %d rows in %.1fs on %s", chunk.shard, table.num_rows, elapsed, runner.device)
    return stage.write_shard(
        chunk.shard, kept, rejected_table(rejected_rows(table, scored), STAGE), rows_in=table.num_rows, extra=extra
    )


# --- id collisions -----------------------------------------------------------------------------
def reassign_ids(groups: dict[int, list[str]], taken: set[int], bits: int = ID_BITS) -> dict[str, int]:
    """For each id shared by several uids: the smallest uid keeps it, the others get the first free
    md5(uid#salt) id. ``taken`` holds every id in use (it is extended with the new ones)."""
    new_ids: dict[str, int] = {}
    for _, uids in sorted(groups.items()):
        for uid in sorted(uids)[1:]:
            salt = 1
            while (candidate := row_id(uid, salt, bits)) in taken:
                salt += 1
            taken.add(candidate)
            new_ids[uid] = candidate
    return new_ids


def rewrite_ids(stage: StageDir, shard: str, new_ids: dict[str, int]) -> None:
    """Rewrite one shard with the reassigned ids (rows and counts unchanged; same atomic write)."""
    kept = read_parquet(stage.path(DATA, f"{shard}.parquet"), stage.storage)
    rejected = read_parquet(stage.path(REJECTED_DIR, f"{shard}.parquet"), stage.storage)
    ids = [new_ids.get(u, i) for u, i in zip(kept.column(UID).to_pylist(), kept.column("id").to_pylist())]
    kept = kept.set_column(kept.schema.get_field_index("id"), "id", pa.array(ids, pa.int64()))
    marker = stage.completed_shards()[shard]
    stage.write_shard(shard, ANNOTATED.conform(kept), rejected, rows_in=marker.rows_in, extra=marker.extra)


def ids_of_file(uri: str, options: StorageOptions | None = None) -> pa.Table:
    """(id, uid, shard) of one output file, for the collision check."""
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        table = pq.read_table(fh, columns=["id", UID])
    shard = storage.basename(uri)[: -len(".parquet")]
    return table.append_column("shard", pa.array([shard] * table.num_rows, pa.string()))


def collision_groups(rows: Iterable[dict]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for r in rows:
        groups.setdefault(r["id"], []).append(r[UID])
    return {i: u for i, u in groups.items() if len(u) > 1}


# --- stats ------------------------------------------------------------------------------------
def stats_extra(stage: StageDir, columns: dict[str, str], run: RunOptions) -> dict:
    """The stage's _stats.json additions, counted from the shard markers: null counts, scorer seconds,
    and where the shards were scored: shards per device, per Spark-assigned GPU address, and how many
    were given a GPU but scored on the CPU (with the markers' notes saying why)."""
    nulls: Counter = Counter()
    seconds: Counter = Counter()
    devices: Counter = Counter()
    addresses: Counter = Counter()
    notes: set[str] = set()
    fallback = 0
    for s in stage.completed_shards().values():
        nulls.update(s.extra.get("nulls", {}))
        seconds.update(s.extra.get("scorer_seconds", {}))
        device, assigned = s.extra.get("device"), s.extra.get("gpu_assigned", [])
        if device:
            devices[device] += 1
        addresses.update(assigned)
        fallback += bool(assigned) and device == "cpu"
        if s.extra.get("device_note"):
            notes.add(s.extra["device_note"])
    return {
        "columns": columns,
        "null_counts": dict(sorted(nulls.items())),
        "devices": sorted(devices),
        "shards_by_device": dict(sorted(devices.items())),
        "shards_by_gpu_address": dict(sorted(addresses.items())),
        "gpu_shards_scored_on_cpu": fallback,
        "device_notes": sorted(notes),
        "scorer_seconds": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "run_options": {"device": run.device, "batch_size": run.batch_size, "decode_workers": run.decode_workers, "cpu_threads": run.cpu_threads},
    }
