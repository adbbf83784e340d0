"""The embeddings layout the annotate stage writes and the semdedup stage reads: clip-retrieval's.

Under the stage folder, one set per shard ``part-IIIII-KKKK`` (N = the shard's digits, ``IIIIIKKKK``, so
the names sort like the shards and embedding-reader / autofaiss pair them in order):

    img_emb/img_emb_N.npy          float16 (rows, dim), L2-normalised image embeddings
    text_emb/text_emb_N.npy        float16 (rows, dim), L2-normalised text embeddings
    metadata/metadata_N.parquet    uid, url, caption: the same rows, in the same order as data/part-....parquet

Every file is written to a temporary name and renamed, before the shard's marker: a shard whose marker
exists has its embeddings, and a retried shard rewrites the same names.
"""

from __future__ import annotations

import io
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import storage
from curation.errors import InputError
from curation.storage import StorageOptions
from schemas import UID

IMG_DIR, TEXT_DIR, META_DIR = "img_emb", "text_emb", "metadata"
# [annotate] embeddings -> the MODELS.toml section whose CLIP embeddings are written
EMBEDDING_MODELS = {"vitb32": "clip_vitb32", "vitl14": "clip_vitl14"}
METADATA_SCHEMA = pa.schema([(UID, pa.string()), ("url", pa.string()), ("caption", pa.string())])


def part_number(shard: str) -> str:
    """``part-00003-0001`` -> ``000030001`` (the N of img_emb_N.npy)."""
    return "".join(shard.split("-")[1:])


def embedding_uris(stage_uri: str, shard: str) -> dict[str, str]:
    n = part_number(shard)
    return {
        IMG_DIR: storage.join(stage_uri, IMG_DIR, f"img_emb_{n}.npy"),
        TEXT_DIR: storage.join(stage_uri, TEXT_DIR, f"text_emb_{n}.npy"),
        META_DIR: storage.join(stage_uri, META_DIR, f"metadata_{n}.parquet"),
    }


def image_embeddings_of(data_uri: str) -> str:
    """The img_emb file that belongs to a stage's ``data/part-....parquet`` file."""
    folder, name = data_uri.rsplit("/", 1)
    if posixpath.basename(folder) != "data" or not name.startswith("part-"):
        raise InputError(f"{data_uri} is not a data/part-*.parquet file of an annotate stage folder")
    return embedding_uris(folder.rsplit("/", 1)[0], name[: -len(".parquet")])[IMG_DIR]


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_embeddings(stage_uri: str, shard: str, kept: pa.Table, image: np.ndarray, text: np.ndarray,
                     options: StorageOptions | None = None) -> None:
    """One shard's embeddings (float16) and metadata, each atomically; rows in ``kept``'s order."""
    if len(image) != kept.num_rows or len(text) != kept.num_rows:
        raise ValueError(f"{shard}: {kept.num_rows} rows but {len(image)} image / {len(text)} text embeddings")
    uris = embedding_uris(stage_uri, shard)
    storage.write_bytes_atomic(uris[IMG_DIR], npy_bytes(np.asarray(image, np.float16)), options)
    storage.write_bytes_atomic(uris[TEXT_DIR], npy_bytes(np.asarray(text, np.float16)), options)
    meta = pa.table([kept.column(UID), kept.column("url"), kept.column("text")], schema=METADATA_SCHEMA)
    buf = pa.BufferOutputStream()
    pq.write_table(meta, buf, compression="zstd")
    storage.write_bytes_atomic(uris[META_DIR], buf.getvalue().to_pybytes(), options)


def read_npy(uri: str, options: StorageOptions | None = None) -> np.ndarray:
    if not storage.exists(uri, options):
        raise InputError(f"embeddings not found: {uri} (run annotate with [annotate] embeddings = \"vitb32\" or \"vitl14\")")
    return np.load(io.BytesIO(storage.read_bytes(uri, options)), allow_pickle=False)
