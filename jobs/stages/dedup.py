"""The dedup stage's units of work, engine-agnostic. The Spark job (jobs/dedup/job.py) distributes them;
the global decisions between phases are filters.dedup's pure functions run per shuffle bucket.

Phase A, one task per input file (a parquet file of the download stage's ``data/``): hash every
image (imagehash's pHash and the robust dedup key, from one decode); ``_work/hashed/part-hNNNNNN.parquet``
gets the slim keys the decisions need (filters.dedup.KEYS: position, uid, pHash, robust key, md5 of the
normalised text, pixels, blank) and ``rejected/part-hNNNNNN.parquet`` the rows without a decodable
image (``not_decodable``) and the blank ones (``blank_image``, unless ``[dedup.rules.keys] reject_blank`` is off). Image bytes
are never copied or shuffled.
Phase B (global, in the job): the decisions, one row per rejected row.
Phase C, one task per input file: ``data/part-fNNNNNN.parquet`` = the input rows, in input order, with
``image_phash`` added and the rejected ones left out; ``rejected/part-fNNNNNN.parquet`` = those, with
their reason and the kept uid (or the matched evaluation set) as detail.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.errors import InputError, StaleStageError
from curation.lifecycle import StageSpec, input_files
from curation.imagehash import KeyResult, PhashMode, keys_many
from curation.stage import SHARDS, SettingsChangedError, ShardStats, StageDir, read_parquet, rejected_table
from filters.dedup import (
    DECISIONS_SCHEMA,
    KEYS_SCHEMA,
    DedupRules,
    KeyRules,
    int64_to_phash,
    phash_to_int64,
    text_key,
)
from schemas import DETAIL, HASH_LIST, REASON, UID, UNIQUE, Reason, Rejection

STAGE = "dedup"
INDEX_STAGE = "hash_index"
HASHED_DIR = "_work/hashed"
REQUIRED_INPUT = (UID, "text", "width", "height", "image_bytes")




def hashed_shard(index: int) -> str:
    return f"part-h{index:06d}"


def final_shard(index: int) -> str:
    return f"part-f{index:06d}"


# the dedup stage reads the download stage's output (or parquet files with the same columns)
SPEC = StageSpec(STAGE, upstream="download", input_columns=REQUIRED_INPUT, finished_input=False)
# a blocklist is a hash-index output, a folder of HASH_LIST parquet files or such files
BLOCKLIST_SPEC = StageSpec("dedup blocklist", upstream=INDEX_STAGE, input_columns=("image_phash",), finished_input=False)


def check_columns(table: pa.Table, uri: str) -> None:
    missing = [c for c in REQUIRED_INPUT if c not in table.column_names]
    if missing:
        raise InputError(f"{uri}: dedup needs columns {list(REQUIRED_INPUT)}; missing {missing}")


def hash_images(images: pa.ChunkedArray | pa.Array, keys: KeyRules, keypoints: bool = False) -> list[KeyResult]:
    """pHash, robust key, window keys, blank verdict and error per image (and, with ``keypoints``, its ORB
    keypoints and 64 px copy: DedupRules.keypoints), decoded in batches of keys.hash_batch_rows."""
    values = images.to_pylist()
    out: list[KeyResult] = []
    for start in range(0, len(values), keys.hash_batch_rows):
        out.extend(
            keys_many(
                values[start : start + keys.hash_batch_rows],
                PhashMode(keys.phash_mode),
                keys.blank_std,
                keys.blank_min_alpha,
                aspect_windows=keys.aspect_windows,
                trim_borders=keys.trim_borders,
                rotation_windows=keys.rotation_windows,
                deep_windows=keys.deep_windows,
                occlusion_windows=keys.occlusion_windows,
                local_features=keypoints,
            )
        )
    return out


def hash_column(images: pa.ChunkedArray | pa.Array, keys: KeyRules) -> tuple[list[str | None], list[str | None]]:
    """pHash and error per image (hash-index: blank images are hashed like any other; no window keys or
    keypoints: a blocklist is matched on the pHash alone)."""
    plain = replace(keys, rotation_windows=False, deep_windows=False, occlusion_windows=False)
    results = hash_images(images, plain)
    return [r.phash for r in results], [r.error for r in results]


def keys_table(table: pa.Table, shard: int, results: list[KeyResult], reject_blank: bool = True) -> pa.Table:
    """KEYS_SCHEMA rows of the input rows that hashed and are not rejected as blank (positions in the
    input file kept)."""
    ok = np.array([r.phash is not None and not (reject_blank and r.blank) for r in results], bool)
    rows = np.flatnonzero(ok)
    width = pc.fill_null(table.column("width"), 0).to_numpy().astype(np.int64)
    height = pc.fill_null(table.column("height"), 0).to_numpy().astype(np.int64)
    texts = table.column("text").to_pylist()
    robust = [phash_to_int64([results[i].key])[0] if results[i].key else None for i in rows]
    return pa.table(
        {
            "shard": pa.array(np.full(len(rows), shard, np.int32)),
            "row": pa.array(rows.astype(np.int64)),
            UID: pc.take(table.column(UID), pa.array(rows)),
            "phash": pa.array(phash_to_int64([results[i].phash for i in rows])),
            "text_key": pa.array([hashlib.md5(text_key(texts[i]).encode()).hexdigest() for i in rows], pa.string()),
            "pixels": pa.array((width * height)[rows]),
            "robust": pa.array(robust, pa.int64()),
            "blank": pa.array([results[i].blank is not None for i in rows], pa.bool_()),
            "windows": pa.array(
                [phash_to_int64(list(results[i].windows)).tolist() if results[i].windows else None for i in rows],
                pa.list_(pa.int64()),
            ),
            "features": pa.array([results[i].features for i in rows], pa.binary()),
            "occlusion": pa.array(
                [phash_to_int64(list(results[i].occlusion)).tolist() if results[i].occlusion else None for i in rows],
                pa.list_(pa.int64()),
            ),
        },
        schema=KEYS_SCHEMA,
    )


def hash_task(stage: StageDir, index: int, uri: str, rules: DedupRules) -> ShardStats:
    """Phase A for one input file (skipped when its marker exists)."""
    shard = hashed_shard(index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    started = time.process_time()
    table = read_parquet(uri, stage.storage)
    check_columns(table, uri)
    results = hash_images(table.column("image_bytes"), rules.keys, rules.keypoints)
    uids = table.column(UID).to_pylist()
    rejected = []
    for i, r in enumerate(results):
        if r.phash is None:
            rejected.append(Rejection(Reason.NOT_DECODABLE, r.error).row(uids[i]))
        elif r.blank and rules.keys.reject_blank:
            rejected.append(Rejection(Reason.BLANK_IMAGE, r.blank).row(uids[i]))
    return stage.write_shard(
        shard,
        keys_table(table, index, results, rules.keys.reject_blank),
        rejected_table(rejected, STAGE),
        rows_in=table.num_rows,
        kept_dir=HASHED_DIR,
        extra={"file": uri, "hash_cpu_seconds": round(time.process_time() - started, 3), "phash_mode": rules.keys.phash_mode},
    )


def read_keys(stage: StageDir, index: int) -> pa.Table:
    table = read_parquet(stage.path(HASHED_DIR, f"{hashed_shard(index)}.parquet"), stage.storage)
    for f in KEYS_SCHEMA:  # a shard without a nullable column (features, occlusion) reads it as nulls
        if f.name not in table.column_names and f.nullable:
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    return table.select(KEYS_SCHEMA.names).cast(KEYS_SCHEMA)


def unique_table(table: pa.Table, keys: pa.Table) -> pa.Table:
    """The input rows named by ``keys`` (in input order) with their image_phash: a UNIQUE table that
    keeps whatever other columns the input has."""
    phash = int64_to_phash(keys.column("phash").to_numpy())
    out = table.take(keys.column("row"))
    if "image_phash" in out.column_names:
        out = out.drop_columns(["image_phash"])
    out = out.append_column(pa.field("image_phash", pa.string(), False), pa.array(phash, pa.string()))
    missing = [c for c in UNIQUE.names if c not in out.column_names]
    if missing:
        raise ValueError(f"dedup output lacks columns {missing} of table {UNIQUE.name!r}")
    return out


def apply_task(stage: StageDir, index: int, uri: str, decisions: pa.Table) -> ShardStats:
    """Phase C for one input file: its kept rows with image_phash, and its rejected rows."""
    shard = final_shard(index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    keys = read_keys(stage, index)
    table = read_parquet(uri, stage.storage)
    marker = stage.path(SHARDS, f"{hashed_shard(index)}.json")
    expected = ShardStats.from_json(storage.read_bytes(marker, stage.storage).decode()).rows_in
    if table.num_rows != expected:
        raise StaleStageError(f"{uri} has {table.num_rows} rows but had {expected} when it was hashed: the input changed")
    decisions = decisions.cast(DECISIONS_SCHEMA).filter(pc.equal(decisions.column("shard"), index))
    decided_rows = decisions.column("row")
    kept_keys = keys.filter(pc.invert(pc.is_in(keys.column("row"), decided_rows)))
    decisions = decisions.sort_by([("row", "ascending")])
    rejected = rejected_table({c: decisions.column(c) for c in (UID, REASON, DETAIL)}, STAGE)
    return stage.write_shard(
        shard, unique_table(table, kept_keys), rejected, rows_in=keys.num_rows, extra={"file": uri}
    )


# --- hash-index: pHash lists of evaluation sets (the blocklist of dedup) -------------------------

IMAGE_COLUMNS = ("image_bytes", "image", "jpg", "jpeg", "png", "webp", "img", "bytes")  # parquet, first found


@dataclass(frozen=True)
class IndexUnit:
    """One hash-index task: a tar file, a parquet file, or a run of image files of one set."""

    index: int
    set_name: str
    kind: str  # "tar" | "parquet" | "images"
    uris: tuple[str, ...]


def index_shard(index: int) -> str:
    return f"part-u{index:06d}"


def _image_extensions() -> frozenset[str]:
    from PIL import Image

    return frozenset(ext.lower() for ext in Image.registered_extensions())


def split_source(source: str) -> tuple[str, str]:
    """``NAME=PATH`` names the set; a bare PATH is named after its last component (extension dropped)."""
    name, sep, path = source.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, path
    base = storage.basename(source)
    for suffix in (".parquet", ".tar"):
        base = base.removesuffix(suffix)
    return base, source


def plan_index(sources: list[str], options: storage.StorageOptions | None, images_per_shard: int) -> tuple[list[IndexUnit], list[str]]:
    """Units of work for hash-index, and the files that are none of tar, parquet or image (skipped)."""
    extensions = _image_extensions()
    units: list[IndexUnit] = []
    skipped: list[str] = []
    for source in sources:
        set_name, path = split_source(source)
        images: list[str] = []
        for uri in storage.expand_inputs([path], options):
            suffix = "." + uri.rsplit(".", 1)[-1].lower() if "." in storage.basename(uri) else ""
            if suffix == ".tar":
                units.append(IndexUnit(len(units), set_name, "tar", (uri,)))
            elif suffix == ".parquet":
                units.append(IndexUnit(len(units), set_name, "parquet", (uri,)))
            elif suffix in extensions:
                images.append(uri)
            else:
                skipped.append(uri)
        for start in range(0, len(images), images_per_shard):
            units.append(IndexUnit(len(units), set_name, "images", tuple(images[start : start + images_per_shard])))
    return units, skipped


def _tar_images(uri: str, options: storage.StorageOptions | None) -> Iterator[tuple[str, bytes]]:
    extensions = _image_extensions()
    with storage.open_input(uri, options) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
        for member in tar:
            name = member.name.lower()
            if member.isfile() and "." in name and "." + name.rsplit(".", 1)[-1] in extensions:
                data = tar.extractfile(member)
                if data is not None:
                    yield f"{uri}#{member.name}", data.read()


def _parquet_images(uri: str, options: storage.StorageOptions | None) -> Iterator[tuple[str, bytes | None]]:
    table = read_parquet(uri, options)
    column = next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
    if column is None:
        raise InputError(f"{uri}: no image column; hash-index looks for one of {list(IMAGE_COLUMNS)}")
    values = table.column(column)
    if pa.types.is_struct(values.type):  # Hugging Face datasets store images as {bytes, path}
        values = pc.struct_field(values, "bytes")
    for i, data in enumerate(values.to_pylist()):
        yield f"{uri}#{i}", data


def unit_images(unit: IndexUnit, options: storage.StorageOptions | None) -> Iterator[tuple[str, bytes | None]]:
    if unit.kind == "tar":
        yield from _tar_images(unit.uris[0], options)
    elif unit.kind == "parquet":
        yield from _parquet_images(unit.uris[0], options)
    else:
        for uri in unit.uris:
            yield uri, storage.read_bytes(uri, options)


def index_task(stage: StageDir, unit: IndexUnit, rules: DedupRules) -> ShardStats:
    """Hash one unit's images into a HASH_LIST shard (skipped when its marker exists)."""
    shard = index_shard(unit.index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    sources, images = [], []
    for source, data in unit_images(unit, stage.storage):
        sources.append(source)
        images.append(data)
    hashes, errors = hash_column(pa.array(images, pa.binary()), rules.keys)
    kept = HASH_LIST.from_pylist(
        [{"image_phash": h, "set_name": unit.set_name, "source": s} for s, h in zip(sources, hashes) if h is not None]
    )
    rejected = [
        {UID: hashlib.md5(s.encode()).hexdigest(), REASON: Reason.NOT_DECODABLE, DETAIL: f"{s}: {e}"}
        for s, h, e in zip(sources, hashes, errors)
        if h is None
    ]
    return stage.write_shard(
        shard, kept, rejected_table(rejected, INDEX_STAGE), rows_in=len(images),
        extra={"set_name": unit.set_name, "kind": unit.kind, "phash_mode": rules.keys.phash_mode},
    )


def blocklist_files(uris: list[str], options: storage.StorageOptions | None = None) -> list[str]:
    """HASH_LIST parquet files of hash-index outputs (their data/), parquet files or folders."""
    files: list[str] = []
    for uri in uris:
        files.extend(input_files(BLOCKLIST_SPEC, [uri], options or storage.StorageOptions()))
    return sorted(dict.fromkeys(files))


def read_blocklist(uri: str, options: storage.StorageOptions | None = None) -> pa.Table:
    """(hash int64, set_name) of one HASH_LIST file."""
    table = HASH_LIST.conform(read_parquet(uri, options))
    return pa.table({"hash": pa.array(phash_to_int64(table.column("image_phash")), pa.int64()), "set_name": table.column("set_name")})
