"""Cost per image of the dedup stage's hashing, as the stage runs it (jobs.stages.dedup.hash_images),
under three rule sets, against plain pHash (curation.imagehash.phash_many, exact), on production-shaped
images: bench/phash.py's photo-like JPEGs (crops of the real photos of ../shared/data/images/photos at
400-1600 px on the longer side, varied encodings; generated and cached in bench/out/ on first use), in two
shapes (``--shapes``):

- ``stored``: as the download stage stores them (filters.image.process_image with the default rules:
  shorter side 384 px, JPEG q90), which is what the dedup stage reads in the pipeline;
- ``original``: as fetched (a run with ``resize_side_px = 0``, or dedup over other images).

Rule sets (``[dedup.rules] mode``, filters.dedup.MODES):

- ``sample``: configs/sample.toml's (mode ``robust``: robust key, crop + aspect windows, trimmed key);
- ``verified``: mode ``verified``: that plus rotated, deep and occlusion windows and ORB keypoints + a
  64 px copy per image (candidates within 10 verified);
- ``verified-no-keypoints``: the same windows without the keypoints, to show what they cost.

Reported: CPU ms per image in this process (BLAS held to one thread, as the stage does) and the ratio to
plain pHash; then, with ``--processes N`` (default 2), the wall time of N processes hashing the same
``--parallel-images`` at once per method (what Spark's Python workers on N cores do), and its ratio.
bench/neardup_quality.py measures the same options on its quality set (102-800 px pictures, where a
decode is cheaper and the fixed per-image work weighs more).

    python bench/dedup_cost.py [--images 600] [--shapes stored original] [--processes 2] [--json out.json]

The target is cost <= 1.5x plain pHash (printed for each rule set; no exit code, this is a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from curation.imagehash import PhashMode, phash_many  # noqa: E402
from jobs.stages.dedup import hash_images  # noqa: E402
from filters.dedup import DedupRules  # noqa: E402
from jobs.stages.config import load_config  # noqa: E402
from phash import cached_images  # noqa: E402

TARGET_COST = 1.5
BATCH = 256  # images per call, as hash_batch_rows


def sample_rules() -> DedupRules:
    return load_config(str(REPO / "configs" / "sample.toml")).dedup.rules


def rule_sets() -> dict[str, DedupRules]:
    verified = DedupRules(mode="verified")
    windows_only = DedupRules("verified", replace(verified.keys, occlusion_windows=False), replace(verified.links, verify=False))
    return {"sample": sample_rules(), "verified": verified, "verified-no-keypoints": windows_only}


def methods() -> dict[str, object]:
    sets = rule_sets()
    out: dict[str, object] = {"phash": lambda images: [r.phash for i in range(0, len(images), BATCH)
                                                        for r in phash_many(images[i : i + BATCH], PhashMode.EXACT)]}
    for name, rules in sets.items():
        out[name] = lambda images, rules=rules: hash_images(
            _as_arrow(images), replace(rules.keys, hash_batch_rows=BATCH), rules.keypoints
        )
    return out


def _as_arrow(images: list[bytes]):
    import pyarrow as pa

    return pa.array(images, pa.binary())


SHAPES = ("stored", "original")


def shaped_images(n: int, seed: int, shape: str) -> list[bytes]:
    """bench/phash.py's photo-like JPEGs as fetched, or as the download stage stores them (made once and
    kept in bench/out/ beside the originals: every parallel worker reads them instead of re-encoding)."""
    images = cached_images(n, seed)[0]
    if shape == "original":
        return images
    import pyarrow as pa
    import pyarrow.parquet as pq

    from filters.image import ImageRules, StoredImage, process_image

    path = REPO / "bench" / "out" / f"dedup-cost-stored-{n}-{seed}.parquet"
    if path.exists():
        return pq.read_table(path).column("image").to_pylist()
    stored = [process_image(d, ImageRules()) for d in images]
    out = [r.image_bytes for r in stored if isinstance(r, StoredImage)]
    pq.write_table(pa.table({"image": pa.array(out, pa.binary())}), path)
    return out


def _cpu(fn, images: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn(images)
        best = min(best, time.process_time() - start)
    return best


def _worker(method: str, n: int, seed: int, count: int, shape: str) -> int:
    images = shaped_images(n, seed, shape)[:count]
    fn = methods()[method]
    fn(images[:8])  # imports, caches, OpenCV's ORB objects outside the timing
    start = time.perf_counter()
    fn(images)
    print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


def parallel(method: str, processes: int, n: int, seed: int, count: int, shape: str) -> float:
    procs = [
        subprocess.Popen([sys.executable, __file__, "--worker", method, "--images", str(n), "--seed", str(seed),
                          "--parallel-images", str(count), "--shapes", shape], stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    return max(json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs)


def _shape(shape: str, args) -> dict:
    from PIL import Image
    import io

    images = shaped_images(args.images, args.seed, shape)
    sizes = [Image.open(io.BytesIO(d)).size for d in images]
    print(f"\n{shape}: {len(images)} JPEGs, longer side {min(max(s) for s in sizes)}-{max(max(s) for s in sizes)} px, "
          f"{sum(w * h for w, h in sizes) / len(sizes) / 1e6:.2f} MP average, {len(set(sizes))} different sizes")
    fns = methods()
    for fn in fns.values():
        fn(images[:8])  # warm
    cpu = {name: _cpu(fn, images, args.repeats) / len(images) for name, fn in fns.items()}
    out: dict[str, object] = {"images": len(images), "ms_per_image": {}, "ratio": {}}
    print("\n| rule set | CPU ms per image (one core) | x plain pHash |\n|---|---|---|")
    for name, seconds in cpu.items():
        ratio = seconds / cpu["phash"]
        out["ms_per_image"][name] = round(1e3 * seconds, 3)
        out["ratio"][name] = round(ratio, 3)
        print(f"| {name} | {1e3 * seconds:.2f} | {ratio:.2f} |")
    if args.processes:
        wall = {name: parallel(name, args.processes, args.images, args.seed, args.parallel_images, shape) for name in fns}
        out["parallel"] = {"processes": args.processes, "images_each": args.parallel_images,
                           "wall_s": {k: round(v, 2) for k, v in wall.items()}}
        print(f"\n{args.processes} processes at once, {args.parallel_images} images each (wall time of the slowest):")
        for name, seconds in wall.items():
            print(f"  {name}: {seconds:.2f} s ({seconds / wall['phash']:.2f}x plain pHash)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=600, help="photo-like JPEGs timed in this process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many CPU-time runs")
    ap.add_argument("--processes", type=int, default=2, help="also time this many processes at once (0: skip)")
    ap.add_argument("--parallel-images", type=int, default=300, help="images each parallel process hashes")
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES), help="image shapes to time (see above)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.images, args.seed, args.parallel_images, args.shapes[0])
    import cv2

    cv2.setNumThreads(1)
    origin = cached_images(args.images, args.seed)[1]
    figures: dict[str, object] = {"origin": origin}
    for shape in args.shapes:
        figures[shape] = _shape(shape, args)
    for shape in args.shapes:
        for name in rule_sets():
            ratio = figures[shape]["ratio"][name]
            print(f"target cost <= {TARGET_COST}x ({shape}, {name}): {ratio:.2f}x {'met' if ratio <= TARGET_COST else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
