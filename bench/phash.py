"""pHash throughput on one core: imagehash.phash vs curation.imagehash exact and fast modes, in one run
on the same images, plus how far fast mode's hashes are from exact ones.

Input: ``--images`` (default 2,000) photo-like JPEGs, 400-1600 px on the longer side, made
deterministically from the real photographs of ../shared/data/images/photos: random crops, rescaling,
brightness/contrast/colour changes, film-like grain, JPEG quality 70-95 with 4:2:0 / 4:4:4 / progressive
encodings, ~5 % grayscale. Without the shared folder, smooth synthetic scenes are used instead (printed).

    python bench/phash.py [--images 2000] [--seed 0] [--json out.json] [--check] [--processes 2]

``--processes N`` (default 2; 0 skips it) also times N processes hashing at once, as Spark's workers
or any multi-process library caller do, on the first 400 images (crops of the real photos at many
sizes; the count of distinct sizes is printed): each process is started *without* the one-thread BLAS
environment this script sets for itself, so it shows what a library caller gets. Methods: imagehash,
curation.imagehash exact (which holds BLAS to one thread itself), and the same without that hold
(``phash_many.__wrapped__``: what BLAS's default threads cost). Wall time of the slowest process.

Rates are images per CPU-second of this process (= per core: BLAS is held to one thread and nothing
else runs in parallel). ``--check`` exits 1 when a target is missed: exact >= 3x imagehash,
fast >= 8x imagehash with Hamming <= 2 to exact on >= 99 % of images, exact == imagehash on all.
It also times decoding alone (Pillow's full decode + convert("L"); libjpeg's draft decode), which
bounds what any implementation of each mode can reach on the same images.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one core, as the rates say
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]

from curation.imagehash import PhashMode, hamming, phash_many

PHOTOS = REPO.parent / "shared" / "data" / "images" / "photos"
TARGET_EXACT = 3.0
TARGET_FAST = 8.0
TARGET_FAST_WITHIN_2 = 0.99


def _sources() -> list[Image.Image]:
    files = sorted(p for p in PHOTOS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = []
    for f in files:
        with Image.open(f) as im:
            if min(im.size) >= 200:
                out.append(im.convert("RGB"))
    return out


def _synthetic_source(rng: np.random.Generator) -> Image.Image:
    h, w = 480, 640
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    channels = []
    for _ in range(3):
        f = rng.uniform(1, 12, 4)
        channels.append(127 + 60 * np.sin(f[0] * x + f[1] * y) + 40 * np.cos(f[2] * x * y * 3 + f[3]))
    arr = np.stack(channels, -1) + rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def photo_like_jpegs(n: int, seed: int = 0) -> tuple[list[bytes], str]:
    rng = np.random.default_rng(seed)
    sources = _sources()
    origin = f"{len(sources)} real photos" if sources else "synthetic scenes (shared photos absent)"
    out = []
    for i in range(n):
        src = sources[i % len(sources)] if sources else _synthetic_source(rng)
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = src.crop((x0, y0, x0 + cw, y0 + ch))
        longer = int(rng.integers(400, 1601))
        scale = longer / max(cw, ch)
        img = img.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.3))
        grain = rng.normal(0, rng.uniform(2, 7), (img.size[1], img.size[0], 1))
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")
        if rng.random() < 0.05:
            img = img.convert("L")
        buf = io.BytesIO()
        kind = rng.random()
        img.save(
            buf,
            "JPEG",
            quality=int(rng.integers(70, 96)),
            subsampling=2 if kind < 0.8 else 0,
            progressive=bool(kind > 0.9),
        )
        out.append(buf.getvalue())
        if (i + 1) % 500 == 0:
            print(f"  generated {i + 1}/{n} images", file=sys.stderr)
    return out, origin


def cached_images(n: int, seed: int) -> tuple[list[bytes], str]:
    """photo_like_jpegs, kept in bench/out/ (git-ignored) so a rerun skips the minute of encoding."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = REPO / "bench" / "out" / f"phash-images-{n}-{seed}.parquet"
    if path.exists():
        table = pq.read_table(path)
        return table.column("image").to_pylist(), table.schema.metadata[b"origin"].decode()
    images, origin = photo_like_jpegs(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"image": pa.array(images, pa.binary())}).replace_schema_metadata({"origin": origin})
    pq.write_table(table, path)
    return images, origin


def _imagehash_all(images: list[bytes]) -> list[str]:
    import imagehash

    return [str(imagehash.phash(Image.open(io.BytesIO(d)))) for d in images]


def _decode_gray(images: list[bytes]) -> list[str]:
    """What every bit-exact method must do: Pillow's full decode and convert("L")."""
    for d in images:
        Image.open(io.BytesIO(d)).convert("L")
    return []


def _decode_draft(images: list[bytes]) -> list[str]:
    """What fast mode must do at least: libjpeg's reduced-scale grayscale decode (entropy decoding
    of every coefficient remains)."""
    for d in images:
        im = Image.open(io.BytesIO(d))
        im.draft("L", (64, 64))
        im.load()
    return []


def _ours(mode: PhashMode, batch: int = 256) -> Callable[[list[bytes]], list[str]]:
    def run(images: list[bytes]) -> list[str]:
        out = []
        for i in range(0, len(images), batch):
            out.extend(r.phash for r in phash_many(images[i : i + batch], mode))
        return out

    return run


def _timed(fn: Callable[[list[bytes]], list[str]], images: list[bytes]) -> tuple[list[str], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    hashes = fn(images)
    return hashes, time.process_time() - cpu, time.perf_counter() - wall


PARALLEL_IMAGES = 400
PARALLEL_METHODS = ("imagehash", "exact", "exact-blas-threads")


def _worker(method: str, n: int, seed: int) -> int:
    """One of the parallel processes: hash the first PARALLEL_IMAGES images, print the wall seconds."""
    images = cached_images(n, seed)[0][:PARALLEL_IMAGES]
    fn = {
        "imagehash": _imagehash_all,
        "exact": _ours(PhashMode.EXACT),
        "exact-blas-threads": lambda imgs: [r.phash for r in phash_many.__wrapped__(imgs, PhashMode.EXACT)],
    }[method]
    fn(images[:10])  # imports and caches outside the timing
    started = time.perf_counter()
    fn(images)
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


def parallel(processes: int, n: int, seed: int) -> dict[str, float]:
    """Wall seconds of the slowest of ``processes`` processes hashing at once, per method."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = {}
    for method in PARALLEL_METHODS:
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", method, "--images", str(n), "--seed", str(seed)],
                             env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        seconds = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"] for p in procs]
        out[method] = max(seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--processes", type=int, default=2, help="also time this many processes at once (0: skip)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.images, args.seed)

    images, origin = cached_images(args.images, args.seed)
    sizes = [Image.open(io.BytesIO(d)).size for d in images]
    print(f"{len(images)} JPEGs from {origin}: longer side {min(max(s) for s in sizes)}-"
          f"{max(max(s) for s in sizes)} px, {sum(map(len, images)) / len(images) / 1024:.0f} KiB average")

    _ours(PhashMode.EXACT)(images[:20])  # warm caches and imports outside the timing
    _imagehash_all(images[:5])
    runs = {
        "imagehash": _timed(_imagehash_all, images),
        "exact": _timed(_ours(PhashMode.EXACT), images),
        "fast": _timed(_ours(PhashMode.FAST), images),
        "decode+L only": _timed(_decode_gray, images),
        "draft decode only": _timed(_decode_draft, images),
    }
    rate = {name: len(images) / cpu for name, (_, cpu, _) in runs.items()}
    for name, (_, cpu, wall) in runs.items():
        print(f"{name:18s} {rate[name]:8.1f} images/s/core  ({cpu:.2f} s CPU, {wall:.2f} s wall)")
    ref, exact, fast = (runs[k][0] for k in ("imagehash", "exact", "fast"))  # the decode-only runs hash nothing
    equal = sum(a == b for a, b in zip(ref, exact))
    dist = Counter(hamming(a, b) for a, b in zip(exact, fast))
    within2 = sum(v for d, v in dist.items() if d <= 2) / len(images)
    ratio_exact, ratio_fast = rate["exact"] / rate["imagehash"], rate["fast"] / rate["imagehash"]
    print(f"exact / imagehash = {ratio_exact:.2f}x (target >= {TARGET_EXACT}); identical hashes: {equal}/{len(images)}")
    print(f"fast  / imagehash = {ratio_fast:.2f}x (target >= {TARGET_FAST})")
    ceiling_exact, ceiling_fast = rate["decode+L only"] / rate["imagehash"], rate["draft decode only"] / rate["imagehash"]
    print(f"ceilings from decoding alone: exact <= {ceiling_exact:.2f}x, fast <= {ceiling_fast:.2f}x imagehash")
    print("Hamming(fast, exact): " + ", ".join(f"{d}: {dist[d]}" for d in sorted(dist))
          + f"  -> <= 2 on {within2:.2%} (target >= {TARGET_FAST_WITHIN_2:.0%})")

    if args.processes:
        sample = images[:PARALLEL_IMAGES]
        n_sizes = len({Image.open(io.BytesIO(d)).size for d in sample})
        wall = parallel(args.processes, args.images, args.seed)
        print(f"{args.processes} processes at once, {len(sample)} images each ({n_sizes} different sizes), BLAS threads "
              "not limited by the environment: " + ", ".join(f"{m} {s:.2f} s" for m, s in wall.items()))
        print(f"  exact / imagehash speed: {wall['imagehash'] / wall['exact']:.2f}x; without the one-thread hold: "
              f"{wall['imagehash'] / wall['exact-blas-threads']:.2f}x")
    figures = {
        "images": len(images),
        "origin": origin,
        "images_per_s_core": {k: round(v, 1) for k, v in rate.items()},
        "ratio_exact": round(ratio_exact, 3),
        "ratio_fast": round(ratio_fast, 3),
        "ceiling_exact": round(ceiling_exact, 3),
        "ceiling_fast": round(ceiling_fast, 3),
        "exact_equal_imagehash": equal,
        "hamming_fast_exact": {str(k): v for k, v in sorted(dist.items())},
        "fast_within_2": round(within2, 5),
    }
    if args.processes:
        figures["parallel_wall_s"] = {m: round(s, 3) for m, s in wall.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    missed = [
        msg
        for ok, msg in (
            (equal == len(images), "exact differs from imagehash"),
            (ratio_exact >= TARGET_EXACT, f"exact under {TARGET_EXACT}x"),
            (ratio_fast >= TARGET_FAST, f"fast under {TARGET_FAST}x"),
            (within2 >= TARGET_FAST_WITHIN_2, "fast Hamming <= 2 under 99 %"),
        )
        if not ok
    ]
    if missed:
        print("targets missed: " + "; ".join(missed))
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
