"""SemDeDup at scale on Spark local[2]: jobs/semdedup.py over synthetic 512-d image embeddings with
planted duplicate groups, laid out as an annotate stage folder (data/ + img_emb/, curation/output/embeddings.py).

Unrelated rows lie around ``--topics`` (default 1,000) random topic centres, noise norm ``--spread``
(0.65: two rows of a topic have a cosine of about 0.7, as CLIP image embeddings of one subject do);
``--topics 0`` draws them uniformly on the sphere instead, where every row is nearly equidistant from
all centroids and k-means splits even tight groups (the hard case). ``--planted`` (default 2 %) of the rows belong to
duplicate groups of 2..4 members, each member = normalise(source + noise), the noise's norm one of
``--noise`` levels (default 0.02, 0.1, 0.15, 0.2: pairwise cosine about 0.9996, 0.990, 0.978, 0.962,
all above 1 - eps = 0.95). Reported per size: wall time of the whole stage (sample, k-means, assignment,
per-cluster decisions, output shards), planted-duplicate recall (rows rejected among the rows that
should go: every member of a group but one) and false rejections (rows of no group rejected).

On ``--subset`` rows (default 20k, its own dataset) the stage's decisions are compared with a
reference that has no clusters: all pairs of the subset compared (blocked products of the whole
20k x 20k matrix) and the same keep rule (jobs.stages.semdedup.decide_cluster on everything as one
cluster); on 2,000 of those rows that reference is itself checked against the row-by-row
jobs.stages.semdedup.brute_force.

    python bench/semdedup.py [--sizes 100000 1000000] [--json out.json] [--check]

``--check`` exits 1 unless the largest size < 300 s, its recall >= 0.99 and the subset decisions equal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.stages.config import Config, SemdedupOptions  # noqa: E402
from curation.output.embeddings import npy_bytes  # noqa: E402
from jobs.stages.semdedup import brute_force, decide_cluster, normalised  # noqa: E402
from curation.stage import StageDir  # noqa: E402
from jobs import semdedup as job  # noqa: E402
from jobs.session import build_spark_session  # noqa: E402

TARGET_SECONDS = 300.0
TARGET_RECALL = 0.99
log = logging.getLogger("bench.semdedup")


def plan(n: int, planted: float, noise: list[float], seed: int):
    """Per row: its group (-1: none) and noise level; groups' sizes; a global row order."""
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < n * planted:
        sizes.append(int(rng.integers(2, 5)))
        total += sizes[-1]
    group = np.full(n, -1, np.int64)
    group[:total] = np.repeat(np.arange(len(sizes)), sizes)[:n]
    level = np.array(noise)[rng.integers(0, len(noise), len(sizes))]
    order = rng.permutation(n)  # rows of a group land in different files
    return group[order], level, np.array(sizes)


def base_rows(rng, count: int, dim: int, topics: np.ndarray | None, spread: float) -> np.ndarray:
    """Unrelated rows: uniform on the sphere (no topics), or around a random topic centre (CLIP-like:
    two rows of one topic have a cosine of about 1 / (1 + spread^2))."""
    noise = rng.normal(size=(count, dim)).astype(np.float32)
    if topics is None:
        return noise
    return topics[rng.integers(0, len(topics), count)] + noise * (spread / np.sqrt(dim))


def write_stage(folder: Path, n: int, dim: int, files: int, planted: float, noise: list[float], seed: int,
                topics: int = 0, spread: float = 0.65):
    """An annotate stage folder (data/, img_emb/, _stats.json, _SUCCESS) and the per-row planted groups."""
    group, level, sizes = plan(n, planted, noise, seed)
    centres = normalised(np.random.default_rng(seed + 2).normal(size=(topics, dim))) if topics else None
    sources = normalised(base_rows(np.random.default_rng(seed + 1), len(sizes), dim, centres, spread))
    (folder / "data").mkdir(parents=True)
    (folder / "img_emb").mkdir()
    per = -(-n // files)
    uids = np.array([f"{seed:02d}{i:030x}" for i in range(n)])
    for f in range(files):
        rows = slice(f * per, min(n, (f + 1) * per))
        rng = np.random.default_rng([seed, f])
        g = group[rows]
        emb = base_rows(rng, len(g), dim, centres, spread)
        member = g >= 0
        jitter = rng.normal(size=(int(member.sum()), dim)).astype(np.float32)
        emb[member] = sources[g[member]] + jitter * (level[g[member]] / np.sqrt(dim))[:, None]
        table = pa.table({"uid": uids[rows], "clip_similarity_vitb32": rng.random(len(g)).astype(np.float32)})
        pq.write_table(table, folder / "data" / f"part-{f:05d}-0000.parquet")
        (folder / "img_emb" / f"img_emb_{f:05d}0000.npy").write_bytes(npy_bytes(normalised(emb).astype(np.float16)))
    (folder / "_stats.json").write_text(json.dumps({"stage": "annotate", "rows_in": n, "rows_out": n, "rejected": {}}))
    (folder / "_SUCCESS").write_bytes(b"")
    return uids, group


def recall(uids: np.ndarray, group: np.ndarray, rejected: set[str]) -> dict:
    gone = np.array([u in rejected for u in uids])
    planted_rows = group >= 0
    per_group = np.bincount(group[planted_rows & gone], minlength=group.max() + 1)
    sizes = np.bincount(group[planted_rows], minlength=group.max() + 1)
    should = int((sizes - 1).clip(0).sum())
    found = int(np.minimum(per_group, (sizes - 1).clip(0)).sum())
    return {"should_go": should, "found": found, "recall": found / max(should, 1),
            "kept_too_few": int((per_group > sizes - 1).sum()), "false_rejections": int((gone & ~planted_rows).sum())}


def rejected_of(out: Path) -> dict[str, str]:
    table = StageDir(str(out), "semdedup").read("rejected")
    return {u: d.split(" ")[1] for u, d in zip(table.column("uid").to_pylist(), table.column("detail").to_pylist())}


def run_size(spark, root: Path, n: int, args, cfg: Config) -> dict:
    src = root / f"annotate-{n}"
    started = time.perf_counter()
    uids, group = write_stage(src, n, args.dim, max(1, n // args.rows_per_file), args.planted, args.noise, args.seed,
                              args.topics, args.spread)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    stats = job.run(spark, [str(src)], str(root / f"semdedup-{n}"), cfg, overwrite=True)
    wall = time.perf_counter() - started
    result = {"rows": n, "seconds": round(wall, 1), "generate_seconds": round(generated, 1), "clusters": stats["clusters"],
              "rows_out": stats["rows_out"], **recall(uids, group, set(rejected_of(root / f"semdedup-{n}")))}
    log.warning("%s", result)
    return result


def subset_check(spark, root: Path, args, cfg: Config) -> dict:
    n = args.subset
    src = root / "subset"
    uids, _ = write_stage(src, n, args.dim, max(1, n // args.rows_per_file), args.planted, args.noise, args.seed + 7,
                          args.topics, args.spread)
    job.run(spark, [str(src)], str(root / "subset-out"), cfg, overwrite=True)
    stage_decisions = rejected_of(root / "subset-out")
    tables = [pq.read_table(p) for p in sorted((src / "data").glob("*.parquet"))]
    emb = np.concatenate([np.load(p) for p in sorted((src / "img_emb").glob("*.npy"))])
    all_uids = [u for t in tables for u in t.column("uid").to_pylist()]
    scores = np.concatenate([t.column("clip_similarity_vitb32").to_numpy() for t in tables])
    started = time.perf_counter()
    decided = decide_cluster(all_uids, scores, emb, cfg.semdedup.eps, cfg.semdedup.block_rows)  # one cluster: all pairs
    reference = {all_uids[i]: all_uids[k] for i, k in enumerate(decided["kept_by"]) if k >= 0}
    ref_seconds = time.perf_counter() - started
    small = 2000
    direct = brute_force(all_uids[:small], scores[:small], emb[:small], cfg.semdedup.eps)
    small_ref = decide_cluster(all_uids[:small], scores[:small], emb[:small], cfg.semdedup.eps, 256)
    small_ref = {all_uids[i]: all_uids[k] for i, k in enumerate(small_ref["kept_by"]) if k >= 0}
    return {"rows": n, "stage_rejected": len(stage_decisions), "reference_rejected": len(reference),
            "equal": stage_decisions == reference, "differences": len(set(stage_decisions.items()) ^ set(reference.items())),
            "reference_seconds": round(ref_seconds, 1), "row_by_row_equal_on_2000": direct == small_ref}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--subset", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--planted", type=float, default=0.02)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.1, 0.15, 0.2])
    ap.add_argument("--topics", type=int, default=1000, help="topic centres of the unrelated rows (0: uniform on the sphere)")
    ap.add_argument("--spread", type=float, default=0.65, help="noise norm around a topic centre")
    ap.add_argument("--rows-per-file", type=int, default=20_000)
    ap.add_argument("--eps", type=float, default=SemdedupOptions.eps)
    ap.add_argument("--clusters", type=int, default=SemdedupOptions.clusters)
    ap.add_argument("--train-sample", type=int, default=SemdedupOptions.train_sample)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("jobs").setLevel(logging.INFO)
    cfg = Config(semdedup=SemdedupOptions(eps=args.eps, clusters=args.clusters, train_sample=args.train_sample))
    spark = build_spark_session(args.master, "bench-semdedup", {"spark.sql.shuffle.partitions": "16", "spark.ui.enabled": "false",
                                                               "spark.driver.memory": "3g"})
    root = Path(tempfile.mkdtemp(prefix="bench-semdedup-", dir=os.environ.get("BENCH_TMP")))
    try:
        report = {"sizes": [run_size(spark, root, n, args, cfg) for n in args.sizes]}
        report["subset"] = subset_check(spark, root, args, cfg) if args.subset else {"equal": None}
        log.warning("subset: %s", report["subset"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.check:
        last = report["sizes"][-1]
        ok = last["seconds"] < TARGET_SECONDS and last["recall"] >= TARGET_RECALL and report["subset"]["equal"]
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
