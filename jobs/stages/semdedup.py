"""The semdedup stage's units of work, engine-agnostic: annotated -> annotated without semantic duplicates.

SemDeDup (Abbas et al. 2023, as NeMo Curator and DataComp run it) on the image embeddings the annotate
stage wrote (curation/output/embeddings.py):

1. spherical k-means (faiss) trained on a sample: the rows whose md5(uid) falls under the sampling
   fraction, sorted by uid, so the sample does not depend on partitioning; the centroids are kept in
   the stage folder so a resumed run assigns with the same ones;
2. every row goes to its nearest centroid (one task per input file);
3. per cluster, rows are ordered by the keep score (highest ``keep_by`` first, then the smallest uid),
   the pairwise cosine similarities are computed in blocks (matrix products, ``block_rows`` rows at a
   time), and a row whose similarity to a row kept before it exceeds ``1 - eps`` is rejected as
   ``semantic_duplicate`` (detail: the most similar kept uid and the similarity);
4. one task per input file writes its shard: the rows that remain, same schema, plus the rejected rows.

Each row's nearest-neighbour similarity within its cluster is counted into a histogram for the report.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.output.embeddings import image_embeddings_of, npy_bytes, read_npy
from curation.errors import InputError
from curation.lifecycle import StageSpec
from curation.stage import ShardStats, StageDir, rejected_table
from curation.storage import StorageOptions
from schemas import DETAIL, REASON, UID, Reason

log = logging.getLogger(__name__)

STAGE = "semdedup"
SPEC = StageSpec(STAGE, upstream="annotate", input_columns=(UID,))
CENTROIDS = "_work/centroids.npy"
# rows handed from the assignment step to the per-cluster step (emb: float16 bytes of the normalised embedding)
ASSIGNED_DDL = "file_index int, uid string, score double, cluster int, emb binary"
# per-cluster decisions: one row per input row (kept_uid null: kept)
DECISIONS_DDL = "file_index int, uid string, kept_uid string, similarity float, nn_similarity float"


def shard_name(file_index: int) -> str:
    return f"part-{file_index:05d}"


# --- embeddings ------------------------------------------------------------------------------------
def normalised(emb: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (float16 storage leaves norms a few 1e-4 off)."""
    emb = np.asarray(emb, np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def read_file(uri: str, keep_by: str, options: StorageOptions | None = None) -> tuple[pa.Table, np.ndarray]:
    """(uid, score) of one annotated data file and its image embeddings, checked to match row for row."""
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        names = pq.read_schema(fh).names
        if keep_by not in names:
            raise InputError(f"{uri} has no column {keep_by!r} ([semdedup] keep_by)")
        table = pq.read_table(fh, columns=[UID, keep_by])
    emb = read_npy(image_embeddings_of(uri), options)
    if emb.ndim != 2 or len(emb) != table.num_rows:
        raise InputError(f"{image_embeddings_of(uri)} holds {emb.shape} embeddings for {table.num_rows} rows of {uri}")
    scores = table.column(keep_by).cast(pa.float64()).fill_null(-np.inf)
    return pa.table({UID: table.column(UID), "score": scores}), emb


def check_embeddings(files: list[str], options: StorageOptions | None = None) -> None:
    """On the driver, before any task: every input file has its img_emb file (one listing per folder)."""
    wanted = [image_embeddings_of(f) for f in files]
    present: set[str] = set()
    for folder in sorted({w.rsplit("/", 1)[0] for w in wanted}):
        if storage.is_dir(folder, options):
            present.update(storage.list_files(folder, options, recursive=False))
    missing = [w for w in wanted if w not in present]
    if missing:
        raise InputError(
            f"semdedup reads image embeddings the annotate stage writes with [annotate] embeddings = \"vitb32\" "
            f"(or \"vitl14\"): {len(missing)} of {len(wanted)} missing, first {missing[0]}"
        )


def uid_fraction(uids: list[str]) -> np.ndarray:
    """A uniform number in [0, 1) per uid, from its md5: the training sample takes those under f."""
    return np.array([int.from_bytes(hashlib.md5(u.encode()).digest()[:8], "big") / 2.0**64 for u in uids])


def sample_rows(uids: list[str], emb: np.ndarray, fraction: float) -> tuple[list[str], np.ndarray]:
    chosen = np.flatnonzero(uid_fraction(uids) < fraction)
    return [uids[i] for i in chosen], emb[chosen]


# --- k-means ---------------------------------------------------------------------------------------
def train_centroids(sample: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (k = min(clusters, sample rows)), unit length, float32."""
    import faiss

    sample = np.ascontiguousarray(normalised(sample))
    k = max(1, min(clusters, len(sample)))
    if k == 1:
        return normalised(sample.mean(axis=0, keepdims=True) if len(sample) else np.ones((1, sample.shape[1])))
    kmeans = faiss.Kmeans(sample.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                          max_points_per_centroid=max(256, len(sample) // k + 1))
    kmeans.train(sample)
    return normalised(kmeans.centroids)


def save_centroids(stage: StageDir, centroids: np.ndarray) -> None:
    storage.write_bytes_atomic(stage.path(CENTROIDS), npy_bytes(np.asarray(centroids, np.float32)), stage.storage)


def load_centroids(stage: StageDir) -> np.ndarray | None:
    uri = stage.path(CENTROIDS)
    return read_npy(uri, stage.storage) if storage.exists(uri, stage.storage) else None


def assign(emb: np.ndarray, centroids: np.ndarray, block_rows: int = 2048) -> np.ndarray:
    """The nearest centroid (highest cosine) of each row, in blocks of rows."""
    emb = normalised(emb)
    out = np.empty(len(emb), np.int32)
    for start in range(0, len(emb), block_rows):
        out[start : start + block_rows] = np.argmax(emb[start : start + block_rows] @ centroids.T, axis=1)
    return out


# --- one cluster -----------------------------------------------------------------------------------
def keep_order(uids: list[str], scores: np.ndarray) -> np.ndarray:
    """Indices in keep priority: highest score first, then the smallest uid (partitioning-independent)."""
    return np.array(sorted(range(len(uids)), key=lambda i: (-scores[i], uids[i])), dtype=np.int64)


def decide_cluster(uids: list[str], scores: np.ndarray, emb: np.ndarray, eps: float, block_rows: int = 2048) -> dict:
    """SemDeDup's rule in one cluster. Returns per row (input order): ``kept_by`` (index of the kept row
    it duplicates, -1 if kept), ``similarity`` to it, and ``nn_similarity`` (highest similarity to any
    other row of the cluster; -1 for a cluster of one).

    Rows in keep order; the similarities are computed block by block (``block_rows`` x n products); only
    pairs above the threshold are kept, then one pass in keep order decides each row against the rows
    kept before it."""
    n = len(uids)
    order = keep_order(uids, np.asarray(scores, np.float64))
    x = normalised(emb)[order]
    threshold = np.float32(1.0 - eps)
    nn = np.full(n, -1.0, np.float32)
    earlier: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # position -> (earlier positions above threshold, sims)
    for start in range(0, n, block_rows):
        sims = x[start : start + block_rows] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # not oneself
        if n > 1:
            nn[start : start + len(rows)] = sims.max(axis=1)
        hit_rows, hit_cols = np.nonzero(sims > threshold)  # row-major: grouped by row
        before = hit_cols < start + hit_rows  # only rows earlier in keep order can keep this one out
        hit_rows, hit_cols = hit_rows[before], hit_cols[before]
        found, first = np.unique(hit_rows, return_index=True)
        for r, cols in zip(found, np.split(hit_cols, first[1:])):
            earlier[start + int(r)] = (cols, sims[r, cols])
    kept = np.ones(n, bool)
    kept_by = np.full(n, -1, np.int64)
    similarity = np.zeros(n, np.float32)
    for pos in sorted(earlier):  # one pass in keep order over the rows that have an earlier near neighbour
        cols, sims = earlier[pos]
        alive = kept[cols]
        if alive.any():
            best = int(np.argmax(np.where(alive, sims, -np.inf)))
            kept[pos], kept_by[pos], similarity[pos] = False, cols[best], sims[best]
    result_kept_by = np.full(n, -1, np.int64)
    result_sim = np.zeros(n, np.float32)
    result_nn = np.empty(n, np.float32)
    result_kept_by[order] = np.where(kept_by >= 0, order[np.maximum(kept_by, 0)], -1)
    result_sim[order] = similarity
    result_nn[order] = nn
    return {"kept_by": result_kept_by, "similarity": result_sim, "nn_similarity": result_nn}


def embedding_bytes(emb: np.ndarray) -> pa.Array:
    """Normalised rows as float16 bytes, one binary value per row (the ASSIGNED ``emb`` column)."""
    rows = np.ascontiguousarray(normalised(emb).astype(np.float16))
    width = rows.shape[1] * 2
    offsets = pa.py_buffer((np.arange(len(rows) + 1, dtype=np.int32) * width).tobytes())
    return pa.Array.from_buffers(pa.binary(), len(rows), [None, offsets, pa.py_buffer(rows.tobytes())])


def binary_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The ``emb`` column back to a float16 (rows, dim) matrix, without a Python loop over rows."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), np.float16)
    kind = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], kind)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    width = int(offsets[1] - offsets[0])
    if not np.all(np.diff(offsets) == width):
        raise ValueError("embeddings of different lengths in one partition")
    return data.view(np.float16).reshape(n, width // 2)


def decide_partition(table: pa.Table, eps: float, block_rows: int) -> pa.Table:
    """ASSIGNED rows of any number of whole clusters -> one DECISIONS row per input row."""
    clusters = table.column("cluster").to_numpy()
    uids = table.column(UID).to_pylist()
    scores = table.column("score").to_numpy(zero_copy_only=False)
    all_emb = binary_matrix(table.column("emb"))
    out_kept: list[str | None] = [None] * len(uids)
    out_sim = np.full(len(uids), np.nan, np.float32)
    out_nn = np.empty(len(uids), np.float32)
    by_cluster = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[by_cluster])) + 1
    for members in np.split(by_cluster, bounds) if len(uids) else []:
        decided = decide_cluster([uids[i] for i in members], scores[members], all_emb[members], eps, block_rows)
        out_nn[members] = decided["nn_similarity"]
        for local, i in enumerate(members):
            if decided["kept_by"][local] >= 0:
                out_kept[i] = uids[members[decided["kept_by"][local]]]
                out_sim[i] = decided["similarity"][local]
    return pa.table({
        "file_index": table.column("file_index"),
        UID: table.column(UID),
        "kept_uid": pa.array(out_kept, pa.string()),
        "similarity": pa.array(out_sim, pa.float32(), mask=np.isnan(out_sim)),
        "nn_similarity": pa.array(out_nn, pa.float32()),
    })


HISTOGRAM = "_work/nn_similarity_histogram.json"


def write_histogram(stage: StageDir, counts: dict[int, int], bins: int) -> None:
    """Nearest-neighbour cosine counts per bin of [-1, 1] (rows alone in their cluster left out)."""
    values = [int(counts.get(k, 0)) for k in range(bins)]
    edges = [round(-1.0 + 2.0 * k / bins, 6) for k in range(bins + 1)]
    text = json.dumps({"edges": edges, "counts": values, "rows": sum(values)})
    storage.write_bytes_atomic(stage.path(HISTOGRAM), text.encode(), stage.storage)


def read_histogram(stage: StageDir) -> dict | None:
    uri = stage.path(HISTOGRAM)
    return json.loads(storage.read_bytes(uri, stage.storage)) if storage.exists(uri, stage.storage) else None


def total_rows(files: list[str], options: StorageOptions | None = None) -> int:
    total = 0
    for uri in files:
        fs, path = storage.filesystem(uri, options)
        with fs.open_input_file(path) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


# --- one output shard ------------------------------------------------------------------------------
def detail(kept_uid: str, similarity: float) -> str:
    return f"kept {kept_uid} (cosine {similarity:.4f})"


def apply_task(stage: StageDir, file_index: int, uri: str, rejected: pa.Table) -> ShardStats:
    """Write shard part-IIIII: the rows of input file ``uri`` whose uid is not in ``rejected``
    (uid, kept_uid, similarity), in their input order and schema, and the rejected rows."""
    shard = shard_name(file_index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    fs, path = storage.filesystem(uri, stage.storage)
    with fs.open_input_file(path) as fh:
        table = pq.read_table(fh)
    drop = pc.is_in(table.column(UID), value_set=rejected.column(UID))
    kept = table.filter(pc.invert(drop))
    if kept.num_rows + rejected.num_rows != table.num_rows:
        raise InputError(f"semdedup: {uri} has {table.num_rows} rows; {rejected.num_rows} decisions name uids it does not hold once")
    rows = [
        {UID: u, REASON: Reason.SEMANTIC_DUPLICATE, DETAIL: detail(k, s)}
        for u, k, s in sorted(zip(*(rejected.column(c).to_pylist() for c in (UID, "kept_uid", "similarity"))))
    ]
    return stage.write_shard(shard, kept, rejected_table(rows, STAGE), rows_in=table.num_rows, extra={"file": uri})


# --- the reference -----------------------------------------------------------------------------------
def brute_force(uids: list[str], scores: np.ndarray, emb: np.ndarray, eps: float) -> dict[str, str]:
    """Reference decisions without clusters and without blocks: every pair compared, rows in keep
    order, each against the rows kept so far. Returns rejected uid -> kept uid. For tests and the bench
    (the cost is n x kept, one matrix-vector product per row)."""
    x = normalised(emb)
    kept: list[int] = []
    rejected: dict[str, str] = {}
    for i in keep_order(uids, np.asarray(scores, np.float64)):
        if kept:
            sims = x[kept] @ x[i]
            best = int(np.argmax(sims))
            if sims[best] > np.float32(1.0 - eps):
                rejected[uids[i]] = uids[kept[best]]
                continue
        kept.append(int(i))
    return rejected
