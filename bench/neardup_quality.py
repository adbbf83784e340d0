"""Near-duplicate quality of plain pHash and of the robust dedup key (issue 10), on a labelled set
built here from the real photos of ../shared/data/images/photos.

Positives: each photo (its original file) paired with each of its generated edits: downscale to 50 %,
JPEG recompression at quality 30, crops (centred, 5 % and 10 % of the area; at a corner, 5 % and 10 %;
a 5 % strip cut from the top edge, which changes the aspect ratio), brightness +30 %, contrast -30 %, a
caption-style text overlay, the 7 other rotations/flips, two EXIF-oriented files (rotated pixels +
orientation tag 6 / 8, upright when displayed), and two alpha variants (an opaque RGBA PNG, and an RGBA
PNG with a 1 % transparent border whose colour channels hold noise); plus the transparent logos of
../shared/data/images/odd paired with their white-background composites. Negatives: random pairs of
files of different photos (edits included), ``--negatives`` (5) times the positives, plus the
Middlebury stereo pair and the two different transparent logos.

Reported at ``--distance`` (default: configs/sample.toml's [dedup.rules] max_distance): recall and
precision of plain pHash, of the robust key alone, and of the robust key with its crop windows (what
the dedup stage does with key = "robust": a pair is linked when one key is within k of the other key or
of one of its window keys), missed pairs by edit; and the hashing cost per image of keys_many (pHash +
robust key + window keys) over phash_many (pHash alone), best of 3 CPU-time runs. The targets are
checked on the robust key with windows.

    python bench/neardup_quality.py [--distance K] [--negatives 5] [--seed 0] [--sweep]
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from curation.hashing import hamming, keys_many, phash_many

REPO = Path(__file__).resolve().parents[1]

DATA = (REPO / ".." / "shared" / "data" / "images").resolve()
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.99
TARGET_COST = 1.3
ORIENTATIONS = {
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip": Image.Transpose.FLIP_TOP_BOTTOM,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


def _jpeg(image: Image.Image, quality: int = 90, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _crop(image: Image.Image, area: float, place: str = "centre") -> Image.Image:
    """A crop removing ``area`` of the pixels: centred, kept at a corner ("top-left", ...) or, for
    "strip", cut from the top edge only (the aspect ratio changes)."""
    w, h = image.size
    if place == "strip":
        return image.crop((0, round(h * area), w, h))
    cw, ch = round(w * (1 - area) ** 0.5), round(h * (1 - area) ** 0.5)
    x = {"left": 0, "right": w - cw}.get(place.split("-")[-1], (w - cw) // 2)
    y = {"top": 0, "bottom": h - ch}.get(place.split("-")[0], (h - ch) // 2)
    return image.crop((x, y, x + cw, y + ch))


def _text(image: Image.Image) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    x, y = w // 40, h - h // 12
    draw.text((x + 1, y + 1), "www.example.com  (c) 2026", fill=(0, 0, 0))  # a caption-style watermark
    draw.text((x, y), "www.example.com  (c) 2026", fill=(255, 255, 255))
    return out


def _exif(image: Image.Image, tag: int) -> bytes:
    """Pixels stored rotated with orientation ``tag``, so that a viewer shows them upright."""
    stored = image.transpose(Image.Transpose.ROTATE_90 if tag == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = tag
    return _jpeg(stored, 92, exif)


def _alpha_garbage(image: Image.Image, seed: int) -> bytes:
    """RGBA: a transparent 1 % border (~4 % of the pixels) whose colour channels hold noise (what
    viewers never show: composited, it is a thin white frame)."""
    rgba = np.array(image.convert("RGBA"))
    h, w = rgba.shape[:2]
    bh, bw = max(1, h // 100), max(1, w // 100)
    mask = np.zeros((h, w), bool)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgba[mask, :3] = noise[mask]
    rgba[mask, 3] = 0
    return _png(Image.fromarray(rgba, "RGBA"))


def edits(image: Image.Image, seed: int) -> dict[str, bytes]:
    rgb = image.convert("RGB")
    w, h = rgb.size
    out = {
        "resize50": _jpeg(rgb.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)),
        "jpeg_q30": _jpeg(rgb, 30),
        "crop5": _jpeg(_crop(rgb, 0.05)),
        "crop10": _jpeg(_crop(rgb, 0.10)),
        "crop5_corner": _jpeg(_crop(rgb, 0.05, ("top-left", "bottom-right")[seed % 2])),
        "crop10_corner": _jpeg(_crop(rgb, 0.10, ("top-right", "bottom-left")[seed % 2])),
        "crop5_strip": _jpeg(_crop(rgb, 0.05, "strip")),
        "bright130": _jpeg(ImageEnhance.Brightness(rgb).enhance(1.3)),
        "contrast70": _jpeg(ImageEnhance.Contrast(rgb).enhance(0.7)),
        "text": _jpeg(_text(rgb)),
        "exif6": _exif(rgb, 6),
        "exif8": _exif(rgb, 8),
        "rgba_opaque": _png(rgb.convert("RGBA")),
        "rgba_border": _alpha_garbage(rgb, seed),
    }
    for name, op in ORIENTATIONS.items():
        out[name] = _jpeg(rgb.transpose(op))
    return out


def _on_white(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return _png(Image.alpha_composite(white, image).convert("RGB"))


def build_set(negatives: int, seed: int) -> tuple[list[tuple[str, bytes]], list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """(files: (name, bytes)), positive pairs and negative pairs as (file index, file index, label)."""
    photos = sorted((DATA / "photos").iterdir())
    if not photos:
        raise SystemExit(f"no photos in {DATA / 'photos'}")
    files: list[tuple[str, bytes]] = []
    groups: list[list[int]] = []
    pos: list[tuple[int, int, str]] = []
    for i, path in enumerate(photos):
        data = path.read_bytes()
        first = len(files)
        files.append((path.name, data))
        for name, edited in edits(Image.open(io.BytesIO(data)), seed + i).items():
            pos.append((first, len(files), name))
            files.append((f"{path.name}:{name}", edited))
        groups.append(list(range(first, len(files))))
    neg: list[tuple[int, int, str]] = []
    logos = [DATA / "odd" / f"jimagehash-transparent{n}.png" for n in (0, 1)]
    if all(p.exists() for p in logos):
        idx = []
        for p in logos:
            idx.append(len(files))
            files.append((p.name, p.read_bytes()))
            pos.append((len(files) - 1, len(files), "alpha_on_white"))
            files.append((f"{p.name}:on_white", _on_white(p.read_bytes())))
        neg.append((idx[0], idx[1], "two_transparent_logos"))
    names = {n: k for k, (n, _) in enumerate(files)}
    left, right = names.get("skimage-motorcycle_left.png"), names.get("skimage-motorcycle_right.png")
    if left is not None and right is not None:
        neg.append((left, right, "stereo_pair"))
    rng = random.Random(seed)
    while len(neg) < negatives * len(pos):
        a, b = rng.sample(range(len(groups)), 2)
        neg.append((rng.choice(groups[a]), rng.choice(groups[b]), "random"))
    return files, pos, neg


def _scores(hashes: list[str | None], pairs: list[tuple[int, int, str]], windows: list[tuple[str, ...]] | None = None) -> np.ndarray:
    """Distance per pair; 65 where either side has no hash (a blank image never matches). With
    ``windows`` (the robust key's crop windows), the smallest of key-key and key-window distances,
    both ways, as the dedup stage links rows."""

    def distance(a: int, b: int) -> int:
        if not (hashes[a] and hashes[b]):
            return 65
        d = hamming(hashes[a], hashes[b])
        if windows is not None:
            d = min([d, *(hamming(hashes[a], w) for w in windows[b]), *(hamming(hashes[b], w) for w in windows[a])])
        return d

    return np.array([distance(a, b) for a, b, _ in pairs])


def _cpu(fn) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def configured_distance() -> int:
    with open(REPO / "configs" / "sample.toml", "rb") as fh:
        return int(tomllib.load(fh)["dedup"]["rules"]["max_distance"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distance", type=int, default=None, help="Hamming k (default: configs/sample.toml's)")
    ap.add_argument("--negatives", type=int, default=5, help="random negative pairs per positive pair")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also print recall/precision for k = 0..12")
    args = ap.parse_args(argv)
    k = configured_distance() if args.distance is None else args.distance
    files, pos, neg = build_set(args.negatives, args.seed)
    data = [d for _, d in files]
    results = keys_many(data)
    plain = [r.phash for r in results]
    robust = [r.key for r in results]
    windows = [r.windows for r in results]
    blank = [files[i][0] for i, r in enumerate(results) if r.blank]
    print(f"{len(files)} images ({len(pos)} positive pairs, {len(neg)} negative pairs); blank (no key): {blank or 'none'}")
    keys = {"phash": (plain, None), "robust": (robust, None), "robust+windows": (robust, windows)}
    dp = {name: _scores(h, pos, w) for name, (h, w) in keys.items()}
    dn = {name: _scores(h, neg, w) for name, (h, w) in keys.items()}
    ok = True
    for name in keys:
        for kk in (range(13) if args.sweep else [k]):
            tp, fp = int((dp[name] <= kk).sum()), int((dn[name] <= kk).sum())
            recall, precision = tp / len(pos), (tp / (tp + fp) if tp + fp else 1.0)
            print(f"{name:14s} k={kk:2d}: recall {recall:.4f} ({tp}/{len(pos)})  precision {precision:.4f} ({fp} false matches)")
            if name == "robust+windows" and kk == k:
                ok = recall >= TARGET_RECALL and precision >= TARGET_PRECISION
        per_edit = Counter(label for (_, _, label), d in zip(pos, dp[name]) if d > k)
        print(f"{name:14s} k={k}: missed pairs by edit: {', '.join(f'{e} {n}' for e, n in sorted(per_edit.items())) or 'none'}")
        false = sorted({label for (_, _, label), d in zip(neg, dn[name]) if d <= k})
        print(f"{name:14s} k={k}: negatives matched: {', '.join(false) or 'none'}")
    t_plain = _cpu(lambda: phash_many(data))
    t_both = _cpu(lambda: keys_many(data))
    ratio = t_both / t_plain
    print(f"cost per image: phash {1000 * t_plain / len(data):.2f} ms, phash + robust key {1000 * t_both / len(data):.2f} ms "
          f"-> {ratio:.2f}x (target <= {TARGET_COST})")
    ok = ok and ratio <= TARGET_COST
    print(f"targets (robust recall >= {TARGET_RECALL} at precision >= {TARGET_PRECISION}, cost <= {TARGET_COST}x): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
