"""Writing selected rows: one parquet file or one webdataset tar, atomically (temp name, then rename).

Engine-agnostic helpers of the select stage (its uid list and --materialize shards). A webdataset folder
also gets ``sizes.json`` (shard name -> samples), the file open_clip's training loader reads for the
number of samples when ``--train-num-samples`` is not given.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.stage import COMPRESSION
from curation.storage import StorageOptions
from schemas import UID

_IMAGE_EXTENSIONS = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"RIFF", "webp"))
_PLAIN_KEY = re.compile(r"[0-9A-Za-z_-]+")
SIZES = "sizes.json"


@contextmanager
def _atomic_output(uri: str, options: StorageOptions | None):
    """An output stream under a temporary name in the target folder, renamed onto ``uri`` on success."""
    fs, path = storage.filesystem(uri, options)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = storage.temp_name(path)  # a failed write leaves it behind; select clears OUT before writing
    with fs.open_output_stream(tmp) as sink:
        yield sink
    fs.move(tmp, path)


def write_parquet(
    uri: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema, options: StorageOptions | None, dictionary: bool = True
) -> int:
    """Stream ``batches`` (cast to ``schema``) into one parquet file, atomically; return its row count.
    ``dictionary=False`` for columns of distinct values (uids), where dictionary pages only cost time."""
    rows = 0
    writer_options = {"compression": COMPRESSION, "use_dictionary": dictionary}
    with _atomic_output(uri, options) as sink, pq.ParquetWriter(sink, schema, **writer_options) as writer:
        for batch in batches:
            writer.write_batch(batch.cast(schema))
            rows += batch.num_rows
    return rows


def part_name(index: int, ext: str = "parquet") -> str:
    return f"part-{index:05d}.{ext}"


def even_shards(batches: Iterable[pa.RecordBatch], rows_per_shard: int) -> Iterator[pa.Table]:
    """Regroup a stream of batches into tables of exactly ``rows_per_shard`` rows (the last may hold fewer)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, rows_per_shard - held)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows_per_shard:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def image_extension(data: bytes) -> str:
    for magic, ext in _IMAGE_EXTENSIONS:
        if data.startswith(magic):
            return ext
    return "bin"


def sample_key(uid: str) -> str:
    """The webdataset key of a row: its uid when that is a plain word (the project's uids are md5 hex), else
    the md5 hex of the uid. Readers split a member name into key and extension at the first dot of its last
    path component, so a key holds no dot and no slash; the sample's json keeps the uid itself."""
    return uid if _PLAIN_KEY.fullmatch(uid) else hashlib.md5(uid.encode("utf-8")).hexdigest()


def webdataset_members(row: dict) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of one sample: ``KEY.<image ext>``, ``KEY.txt`` (caption), ``KEY.json`` (other columns),
    KEY = :func:`sample_key` of the uid."""
    key = sample_key(row[UID])
    image = row.get("image_bytes")
    if image:
        yield f"{key}.{image_extension(image)}", image
    if row.get("text") is not None:
        yield f"{key}.txt", row["text"].encode("utf-8")
    meta = {k: v for k, v in row.items() if k not in ("image_bytes",)}
    yield f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def write_webdataset(uri: str, table: pa.Table, options: StorageOptions | None) -> int:
    """One webdataset tar for a shard; fixed mtime/owner so the same rows give the same bytes. Returns its
    sample count."""
    keys: set[str] = set()
    with _atomic_output(uri, options) as sink, tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for row in table.to_pylist():
            key = sample_key(row[UID])
            if key in keys:  # readers would merge the two rows into one sample
                raise ValueError(f"{uri}: two rows share the webdataset key {key!r} (uid {row[UID]!r})")
            keys.add(key)
            for name, data in webdataset_members(row):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))
    return len(keys)


def write_sizes(folder: str, sizes: dict[str, int], options: StorageOptions | None) -> None:
    """``folder/sizes.json``: each tar's name -> its sample count (open_clip's layout)."""
    with _atomic_output(storage.join(folder, SIZES), options) as sink:
        sink.write(json.dumps(dict(sorted(sizes.items())), indent=1).encode())
