"""Near-duplicate quality of the dedup keys under the edits people make, on a
labelled set built here from the real photos of ../shared/data/images/photos, with Facebook's PDQ
hash measured side by side in the same run.

**Positives**: each photo (its original file) paired with ``--copies`` (3) edited copies per hard edit
class, at random strengths:

- ``strip_crop``: 5-20 % cut from one side (the aspect ratio changes);
- ``crop_resize``: the largest crop of another aspect ratio (1:1, 4:3, 3:4, 16:9, 9:16, 2:1) at a random
  offset, resized to 300-800 px;
- ``bars_black`` / ``bars_white`` / ``bars_blurred``: letterbox or pillarbox bars padding the picture to
  another aspect ratio (bars 10-45 % of the canvas), flat black, flat white, or the picture itself
  enlarged and blurred;
- ``overlay_text``: a caption band with large text over 5-25 % of the picture (top or bottom, opaque or
  translucent); ``overlay_logo``: a sticker (rounded box or disc with text) over 5-25 %; ``local_edit``:
  a rectangle of 10-25 % blurred away, painted over or cloned from elsewhere in the picture;
- ``rotate_crop``: rotated by 3-30 degrees and cropped to the largest upright rectangle of the same
  aspect; ``rotate_fill``: rotated by 3-30 degrees onto a larger canvas filled black or white;
- ``combo``: one of the above, then downscaled to 40-80 % and re-encoded at JPEG quality 35-60;

plus easy edits (``easy``: resize 50 %, JPEG q30, a centred 10 % crop, rot90, mirror,
EXIF orientation 6, brightness +30 %, an RGBA PNG with a transparent noisy border), and the transparent
logos of ../shared/data/images/odd paired with their white-background composites. Overlay texts,
colours, positions and bar colours depend only on (class, copy), so the same template lands on every
photo.

**Negatives** (``--negatives`` (5) times the positives, at least): hard ones first: the same template
with different content (same class and copy, two different photos: same bars, same banner, same
sticker), different pictures of the same scene (two non-overlapping halves of one photo; the Middlebury
stereo pair; two different transparent logos), then random pairs of files of different photos.

**Exhaustive negatives** (precision at scale): every pair of files that come from different photos
(~1.3 M pairs at ``--copies 3``): the false-link rate per pair at each method's threshold, and what it
means for a corpus of one million images (5e11 pairs).

Methods, each at its threshold: ``phash`` (imagehash's, k), ``robust`` (the robust key alone, k),
``stage`` (the dedup stage as configs/sample.toml configures it: robust key + crop windows at k: a pair
is linked when one key is within k of the other key or of one of its window keys), ``pdq`` (256-bit
PDQ of the EXIF-upright, alpha-composited image, best of its 8 dihedral hashes, at distance 31, 63, 90
and its best threshold with precision >= 0.99 on the bench pairs), and (the verified mode's parts, unless ``--no-verify``):
``rot`` (the stage's keys plus 40 rotated window keys, curation.imagehash.windows, at k), ``rot+deep`` (plus ~97
deep aspect windows: crops to common aspect ratios), ``occlusion`` (12 occlusion windows and 3 masked centres matched window against window, at k),
``rot+deep+verify`` (rot+deep keys within VerifyRules.link_distance linked as they are, pairs within
candidate_distance linked only when their ORB keypoints agree on one similarity transform:
filters/dedup/pair_verify.py: keypoints in enough cells of each picture, or, failing that, the pixels of the
tiny copies agreeing once the keypoints' transform lines them up), ``verified`` (the same, with pairs
whose occlusion windows are within OCCLUSION_DISTANCE also verified) and ``verified-keypoints`` (as
``verified``, by the keypoints' cells rule alone: the pixel check off). Reported: recall and precision on
the bench pairs, recall per edit class side by side, false links on the exhaustive pairs, and the
hashing cost per image of keys_many over phash_many (best of 3 CPU-time runs; BLAS held to one thread).

    python bench/neardup_quality.py [--distance K] [--copies 3] [--negatives 5] [--seed 0] [--sweep] [--no-pdq] [--no-verify]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # cost per image on one core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import random
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from curation.imagehash.windows import DEEP_MAX_LENGTH, DEEP_MIN_LENGTH, DEEP_STEP, ROTATION_ANGLES, TARGET_ASPECTS, deep_aspect_keys, occlusion_keys, rotated_window_keys_many
from curation.imagehash import ASPECT_LENGTHS, ASPECT_PLACES, WINDOW_PLACES, WINDOW_SCALES, keys_many, phash_many, resize_gray_32
from curation.imagehash.keypoints import PACKED_MAX, LocalFeatures, features_from_gray, pack_features
from filters.dedup import plan_bands
from filters.dedup.pair_verify import VerifyRules, Verdict, linked, verify_pair

REPO = Path(__file__).resolve().parents[1]

DATA = (REPO / ".." / "shared" / "data" / "images").resolve()
TARGET_RECALL = 0.95
TARGET_PRECISION = 0.99
TARGET_CLASS_RECALL = 0.85
TARGET_COST = 1.5
PDQ_DISTANCES = (31, 63, 90)
OCCLUSION_DISTANCE = 4  # occlusion window against occlusion window (verified pairs only)
HARD_CLASSES = (
    "strip_crop",
    "crop_resize",
    "bars_black",
    "bars_white",
    "bars_blurred",
    "overlay_text",
    "overlay_logo",
    "local_edit",
    "rotate_crop",
    "rotate_fill",
    "combo",
)
ASPECTS = (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0)
WORDS = ("SALE", "www.example.com", "Breaking news", "(c) 2026 Studio", "LIKE & SHARE", "Original photo", "when you see it")
COLOURS = ((0, 0, 0), (255, 255, 255), (220, 30, 40), (20, 90, 200), (250, 200, 0), (30, 160, 60))


# --- encoding ------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int = 90, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


# --- the hard edits: (picture, template rng, strength rng) -> picture -----------------------------


def strip_crop(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    w, h = im.size
    frac = s.uniform(0.05, 0.20)
    side = t.choice(("top", "bottom", "left", "right"))
    box = {
        "top": (0, round(h * frac), w, h),
        "bottom": (0, 0, w, h - round(h * frac)),
        "left": (round(w * frac), 0, w, h),
        "right": (0, 0, w - round(w * frac), h),
    }[side]
    return im.crop(box)


def crop_resize(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    w, h = im.size
    aspect = t.choice([a for a in ASPECTS if abs(np.log(a / (w / h))) > 0.15])
    cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
    x, y = s.randint(0, w - cw), s.randint(0, h - ch)
    longer = s.randint(300, 800)
    scale = longer / max(cw, ch)
    return im.crop((x, y, x + cw, y + ch)).resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)


def bars(im: Image.Image, t: random.Random, s: random.Random, kind: str) -> Image.Image:
    """Pad to another aspect ratio so that the bars take 10-45 % of the canvas."""
    w, h = im.size
    frac = s.uniform(0.10, 0.45)
    letterbox = w >= h if t.random() < 0.8 else w < h  # mostly the natural one: landscape -> bars above and below
    cw, ch = (w, round(h / (1 - frac))) if letterbox else (round(w / (1 - frac)), h)
    if kind == "blurred":
        canvas = im.resize((cw, ch), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(max(cw, ch) / 25))
    else:
        canvas = Image.new("RGB", (cw, ch), (0, 0, 0) if kind == "black" else (255, 255, 255))
    canvas.paste(im, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def overlay_text(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    out = im.convert("RGBA")
    w, h = out.size
    band = round(h * s.uniform(0.05, 0.25))
    y0 = 0 if t.random() < 0.4 else h - band
    colour = t.choice(COLOURS)
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle((0, y0, w, y0 + band), fill=(*colour, t.choice((160, 220, 255))))
    text = t.choice(WORDS)
    font = _font(round(band * 0.6))
    ink = (255, 255, 255) if sum(colour) < 380 else (0, 0, 0)
    draw.text((w // 20, y0 + band * 0.2), text, font=font, fill=(*ink, 255))
    return Image.alpha_composite(out, layer).convert("RGB")


def overlay_logo(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    out = im.copy()
    w, h = out.size
    area = s.uniform(0.05, 0.25)
    side = (area * w * h) ** 0.5
    lw, lh = round(min(w, side * 1.3)), round(min(h, side / 1.3))
    x = round((w - lw) * t.choice((0.03, 0.5, 0.97)))
    y = round((h - lh) * t.choice((0.03, 0.5, 0.97)))
    draw = ImageDraw.Draw(out)
    colour = t.choice(COLOURS)
    if t.random() < 0.5:
        draw.rounded_rectangle((x, y, x + lw, y + lh), radius=lh // 5, fill=colour, outline=(255, 255, 255), width=max(1, lh // 30))
    else:
        draw.ellipse((x, y, x + lw, y + lh), fill=colour)
    ink = (255, 255, 255) if sum(colour) < 380 else (0, 0, 0)
    draw.text((x + lw * 0.15, y + lh * 0.3), t.choice(WORDS)[:8], font=_font(round(lh * 0.3)), fill=ink)
    return out


def local_edit(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    out = im.copy()
    w, h = out.size
    area = s.uniform(0.10, 0.25)
    aspect = s.uniform(0.6, 1.6)
    rw, rh = round(min(w, (area * w * h * aspect) ** 0.5)), round(min(h, (area * w * h / aspect) ** 0.5))
    x, y = s.randint(0, w - rw), s.randint(0, h - rh)
    kind = t.choice(("blur", "paint", "clone"))
    region = out.crop((x, y, x + rw, y + rh))
    if kind == "blur":
        patch = region.filter(ImageFilter.GaussianBlur(max(rw, rh) / 10))
    elif kind == "paint":
        patch = Image.new("RGB", (rw, rh), tuple(int(v) for v in np.asarray(region).reshape(-1, 3).mean(axis=0)))
    else:
        sx, sy = s.randint(0, w - rw), s.randint(0, h - rh)
        patch = out.crop((sx, sy, sx + rw, sy + rh)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out.paste(patch, (x, y))
    return out


def _angle(t: random.Random, s: random.Random) -> float:
    return s.uniform(3.0, 30.0) * t.choice((-1, 1))


def rotate_crop(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    """Rotated, then the largest centred rectangle of the original aspect inside the rotated picture."""
    w, h = im.size
    a = np.radians(abs(_angle(t, s)))
    scale = 1.0 / (np.cos(a) + np.sin(a) * max(w / h, h / w))  # fits the rotated frame (same aspect)
    rotated = im.rotate(np.degrees(a) * (1 if t.random() < 0.5 else -1), Image.Resampling.BICUBIC)
    cw, ch = round(w * scale), round(h * scale)
    x, y = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((x, y, x + cw, y + ch))


def rotate_fill(im: Image.Image, t: random.Random, s: random.Random) -> Image.Image:
    return im.rotate(_angle(t, s), Image.Resampling.BICUBIC, expand=True, fillcolor=t.choice(((0, 0, 0), (255, 255, 255))))


EDITS = {
    "strip_crop": strip_crop,
    "crop_resize": crop_resize,
    "bars_black": lambda im, t, s: bars(im, t, s, "black"),
    "bars_white": lambda im, t, s: bars(im, t, s, "white"),
    "bars_blurred": lambda im, t, s: bars(im, t, s, "blurred"),
    "overlay_text": overlay_text,
    "overlay_logo": overlay_logo,
    "local_edit": local_edit,
    "rotate_crop": rotate_crop,
    "rotate_fill": rotate_fill,
}


def combo(im: Image.Image, t: random.Random, s: random.Random) -> tuple[bytes, str]:
    name = t.choice(sorted(EDITS))
    edited = EDITS[name](im, t, s)
    scale = s.uniform(0.4, 0.8)
    w, h = edited.size
    small = edited.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return _jpeg(small, s.randint(35, 60)), name


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32(":".join(map(str, parts)).encode()))


def hard_edits(rgb: Image.Image, photo: int, copies: int, seed: int) -> list[tuple[str, int, bytes]]:
    """(class, copy, bytes): ``copies`` of each hard class; template choices depend on (class, copy)."""
    out = []
    for copy in range(copies):
        for cls in HARD_CLASSES:
            t, s = _rng(seed, cls, copy), _rng(seed, cls, copy, photo)
            if cls == "combo":
                data, _ = combo(rgb, t, s)
            else:
                data = _jpeg(EDITS[cls](rgb, t, s), s.randint(80, 95))
            out.append((cls, copy, data))
    return out


# --- the easy edits --------------------------------------------------------------------------------


def _exif(image: Image.Image, tag: int) -> bytes:
    stored = image.transpose(Image.Transpose.ROTATE_90 if tag == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = tag
    return _jpeg(stored, 92, exif)


def _alpha_border(image: Image.Image, seed: int) -> bytes:
    rgba = np.array(image.convert("RGBA"))
    h, w = rgba.shape[:2]
    bh, bw = max(1, h // 100), max(1, w // 100)
    mask = np.zeros((h, w), bool)
    mask[:bh], mask[-bh:], mask[:, :bw], mask[:, -bw:] = True, True, True, True
    noise = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgba[mask, :3] = noise[mask]
    rgba[mask, 3] = 0
    return _png(Image.fromarray(rgba, "RGBA"))


def easy_edits(rgb: Image.Image, seed: int) -> list[tuple[str, int, bytes]]:
    w, h = rgb.size
    cw, ch = round(w * 0.9**0.5), round(h * 0.9**0.5)
    x, y = (w - cw) // 2, (h - ch) // 2
    edits = [
        _jpeg(rgb.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)),
        _jpeg(rgb, 30),
        _jpeg(rgb.crop((x, y, x + cw, y + ch))),
        _jpeg(rgb.transpose(Image.Transpose.ROTATE_90)),
        _jpeg(rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        _exif(rgb, 6),
        _jpeg(ImageEnhance.Brightness(rgb).enhance(1.3)),
        _alpha_border(rgb, seed),
    ]
    return [("easy", i, d) for i, d in enumerate(edits)]


def _on_white(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return _png(Image.alpha_composite(white, image).convert("RGB"))


# --- the set -------------------------------------------------------------------------------------


@dataclass
class BenchSet:
    names: list[str]
    data: list[bytes]
    group: np.ndarray  # which photo a file comes from (pairs across groups are the exhaustive negatives)
    pos: list[tuple[int, int, str]]  # (file, file, edit class)
    neg: list[tuple[int, int, str]]  # (file, file, kind)


def build_set(copies: int, negatives: int, seed: int) -> BenchSet:
    photos = sorted((DATA / "photos").iterdir())
    if not photos:
        raise SystemExit(f"no photos in {DATA / 'photos'}")
    names: list[str] = []
    data: list[bytes] = []
    group: list[int] = []
    pos: list[tuple[int, int, str]] = []
    template: dict[tuple[str, int], list[int]] = defaultdict(list)
    halves: list[tuple[int, int, str]] = []
    n_groups = 0

    def add(name: str, blob: bytes, g: int) -> int:
        names.append(name)
        data.append(blob)
        group.append(g)
        return len(names) - 1

    for photo, path in enumerate(photos):
        raw = path.read_bytes()
        g = n_groups
        n_groups += 1
        first = add(path.name, raw, g)
        rgb = ImageOps.exif_transpose(Image.open(io.BytesIO(raw))).convert("RGB")
        for cls, copy, blob in hard_edits(rgb, photo, copies, seed) + easy_edits(rgb, seed + photo):
            i = add(f"{path.name}:{cls}#{copy}", blob, g)
            pos.append((first, i, cls))
            if cls != "easy":
                template[(cls, copy)].append(i)
        w, h = rgb.size  # two non-overlapping halves: different pictures of one scene (their own groups)
        for (a, b), label in (
            (((0, 0, w * 48 // 100, h), (w * 52 // 100, 0, w, h)), "scene_left_right"),
            (((0, 0, w, h * 48 // 100), (0, h * 52 // 100, w, h)), "scene_top_bottom"),
        ):
            ia = add(f"{path.name}:{label}:a", _jpeg(rgb.crop(a)), g)  # the photo's group: they share content
            ib = add(f"{path.name}:{label}:b", _jpeg(rgb.crop(b)), g)  # with its edits (listed negatives only)
            halves.append((ia, ib, label))
    neg: list[tuple[int, int, str]] = list(halves)
    logos = [DATA / "odd" / f"jimagehash-transparent{n}.png" for n in (0, 1)]
    if all(p.exists() for p in logos):
        idx = []
        for p in logos:
            idx.append(add(p.name, p.read_bytes(), n_groups))
            pos.append((idx[-1], add(f"{p.name}:on_white", _on_white(p.read_bytes()), n_groups), "alpha_on_white"))
            n_groups += 1
        neg.append((idx[0], idx[1], "two_transparent_logos"))
    index = {n: k for k, n in enumerate(names)}
    left, right = index.get("skimage-motorcycle_left.png"), index.get("skimage-motorcycle_right.png")
    if left is not None and right is not None:
        neg.append((left, right, "stereo_pair"))
    rng = random.Random(seed)
    same_template = [(a, b, "same_template") for files in template.values() for j, a in enumerate(files) for b in files[j + 1 :]]
    neg += rng.sample(same_template, min(len(same_template), 3 * len(pos)))
    groups = np.asarray(group)
    while len(neg) < negatives * len(pos):
        a, b = rng.sample(range(len(names)), 2)
        if groups[a] != groups[b]:
            neg.append((a, b, "random"))
    return BenchSet(names, data, groups, pos, neg)


# --- distances -------------------------------------------------------------------------------------


def _hex_to_u64(values: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """uint64 array and a mask of present values (None: no key)."""
    ok = np.array([v is not None for v in values], bool)
    out = np.zeros(len(values), np.uint64)
    out[ok] = np.array([int(v, 16) for v in values if v is not None], np.uint64)
    return out, ok


@dataclass
class KeyMethod:
    """Keys (N,) and window keys (N, W) of one method; distance = the stage's link distance."""

    keys: np.ndarray
    ok: np.ndarray
    windows: np.ndarray | None = None  # (N, W) uint64

    def pair_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = np.bitwise_count(self.keys[a] ^ self.keys[b]).astype(np.int32)
        if self.windows is not None and self.windows.shape[1]:
            d = np.minimum(d, np.bitwise_count(self.keys[a, None] ^ self.windows[b]).min(axis=1))
            d = np.minimum(d, np.bitwise_count(self.keys[b, None] ^ self.windows[a]).min(axis=1))
        return np.where(self.ok[a] & self.ok[b], d, 999)

    def all_distances(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), N): distance of each row in ``rows`` to every file."""
        n = len(self.keys)
        out = np.empty((len(rows), n), np.int32)
        for r, i in enumerate(rows):
            out[r] = self.pair_distance(np.full(n, i), np.arange(n))
        return out


@dataclass
class PdqMethod:
    dihedral: np.ndarray  # (N, 8, 4) uint64: the 8 dihedral hashes, 256 bits each
    ok: np.ndarray

    def pair_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x = self.dihedral[a]  # (P, 8, 4)
        y = self.dihedral[b, 0][:, None, :]  # (P, 1, 4)
        d = np.bitwise_count(x ^ y).sum(axis=2).min(axis=1).astype(np.int32)
        return np.where(self.ok[a] & self.ok[b], d, 999)


def pdq_hashes(data: list[bytes]) -> PdqMethod:
    import pdqhash

    out = np.zeros((len(data), 8, 4), np.uint64)
    ok = np.zeros(len(data), bool)
    weights = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)
    for i, blob in enumerate(data):
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(blob)))
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        hashes, _quality = pdqhash.compute_dihedral(rgb)
        bits = np.asarray(hashes, np.uint64).reshape(8, 4, 64)
        out[i] = (bits * weights).sum(axis=2, dtype=np.uint64)
        ok[i] = True
    return PdqMethod(out, ok)


def _exhaustive_false_links(method, group: np.ndarray, thresholds: list[int], chunk: int = 64,
                            examples_per_chunk: int | None = 5) -> tuple[int, dict[int, int], dict[int, set]]:
    """Pairs (i < j) of files of different groups, how many are within each threshold, and examples of
    them (``examples_per_chunk`` per chunk of rows; None: all)."""
    n = len(group)
    counts = {t: 0 for t in thresholds}
    examples: dict[int, set] = {t: set() for t in thresholds}
    total = 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        a = np.repeat(rows, n)
        b = np.tile(np.arange(n), len(rows))
        keep = (b > a) & (group[a] != group[b])
        a, b = a[keep], b[keep]
        d = method.pair_distance(a, b)
        total += len(a)
        for t in thresholds:
            hit = d <= t
            counts[t] += int(hit.sum())
            examples[t] |= {(int(x), int(y)) for x, y in zip(a[hit][:examples_per_chunk], b[hit][:examples_per_chunk])}
    return total, counts, examples


def _cpu(fn) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def _pairs(pairs: list[tuple[int, int, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs]))


def _recall_precision(dp: np.ndarray, dn: np.ndarray, t: int) -> tuple[float, float, int]:
    tp, fp = int((dp <= t).sum()), int((dn <= t).sum())
    return tp / len(dp), (tp / (tp + fp) if tp + fp else 1.0), fp


def _windows(results, width: int, keys: np.ndarray, pick) -> np.ndarray:
    """(N, width) uint64 window keys chosen by ``pick(windows tuple)``, padded with the row's own key."""
    out = np.repeat(keys[:, None], width, axis=1)
    for i, r in enumerate(results):
        chosen = pick(r.windows) if r.windows else ()
        if chosen:
            out[i, : len(chosen)] = [int(w, 16) for w in chosen]
    return out


N_CROP = len(WINDOW_SCALES) * len(WINDOW_PLACES)
N_ASPECT = 2 * len(ASPECT_LENGTHS) * len(ASPECT_PLACES)


def key_methods(results) -> dict[str, KeyMethod]:
    """From keys_many(aspect_windows=True, trim_borders=True): windows = 20 crop, 36 aspect, then the
    trimmed key when the image has bars; each variant of the stage takes its part."""
    plain, plain_ok = _hex_to_u64([r.phash for r in results])
    robust, robust_ok = _hex_to_u64([r.key for r in results])
    trim = lambda w: tuple(w[N_CROP + N_ASPECT :])  # noqa: E731
    return {
        "phash": KeyMethod(plain, plain_ok),
        "robust": KeyMethod(robust, robust_ok),
        "crop": KeyMethod(robust, robust_ok, _windows(results, N_CROP, robust, lambda w: w[:N_CROP])),
        "crop+trim": KeyMethod(robust, robust_ok, _windows(results, N_CROP + 1, robust, lambda w: w[:N_CROP] + trim(w))),
        "crop+aspect": KeyMethod(robust, robust_ok, _windows(results, N_CROP + N_ASPECT, robust, lambda w: w[: N_CROP + N_ASPECT])),
        "crop+aspect+trim": KeyMethod(robust, robust_ok, _windows(results, N_CROP + N_ASPECT + 1, robust, lambda w: w)),
    }


def upright_gray(blob: bytes) -> np.ndarray:
    """Grayscale of the EXIF-upright image, alpha composited on white (what the dedup key sees)."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(blob)))
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"))


def new_window_keys(thumbs: list[np.ndarray], sizes: list[tuple[int, int]]) -> tuple[list[tuple[str, ...]], ...]:
    """Rotated, deep aspect and occlusion window keys of each image (curation.imagehash.windows)."""
    rotated = rotated_window_keys_many(thumbs, sizes)
    stacked = np.stack(thumbs)
    return rotated, deep_aspect_keys(stacked, sizes), occlusion_keys(stacked)


@dataclass
class WindowWindowMethod:
    """Distance = the smallest between any occlusion window of one row and any of the other's."""

    windows: np.ndarray  # (N, W) uint64
    ok: np.ndarray

    def pair_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(len(a), np.int32)
        for start in range(0, len(a), 20000):
            x, y = self.windows[a[start : start + 20000]], self.windows[b[start : start + 20000]]
            out[start : start + 20000] = np.bitwise_count(x[:, :, None] ^ y[:, None, :]).min(axis=(1, 2))
        return np.where(self.ok[a] & self.ok[b], out, 999)


def _as_u64(keys: list[tuple[str, ...]], base: KeyMethod) -> np.ndarray:
    """(N, the most keys of a row) uint64, each row padded with its own key (a row's own key is no link)."""
    out = np.repeat(base.keys[:, None], max([len(r) for r in keys] + [1]), axis=1)
    for i, r in enumerate(keys):
        if base.ok[i] and r:
            out[i, : len(r)] = [int(x, 16) for x in r]
    return out


@dataclass
class Verdicts:
    """verify_pair's verdicts by pair, shared by the verified methods, and the CPU time they took."""

    by_pair: dict[tuple[int, int], Verdict]
    seconds: float = 0.0


@dataclass
class VerifiedMethod:
    """``verified``: a key method's pairs within rules.link_distance linked, those within
    rules.candidate_distance linked when verify_pair says so; distance 0 = linked, 999 = not."""

    keys: KeyMethod
    features: list[LocalFeatures]
    rules: VerifyRules
    verdicts: Verdicts
    occlusion: WindowWindowMethod | None = None
    occlusion_distance: int = -1

    def verdict(self, a: int, b: int) -> Verdict:
        pair = (min(a, b), max(a, b))
        if pair not in self.verdicts.by_pair:
            start = time.process_time()
            self.verdicts.by_pair[pair] = verify_pair(self.features[pair[0]], self.features[pair[1]], self.rules)
            self.verdicts.seconds += time.process_time() - start
        return self.verdicts.by_pair[pair]

    def candidates(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key distance, candidate?) per pair: key within candidate_distance of the other's key or
        windows, or an occlusion window within occlusion_distance of one of the other's."""
        d = self.keys.pair_distance(a, b)
        cand = d <= self.rules.candidate_distance
        if self.occlusion is not None:
            cand |= self.occlusion.pair_distance(a, b) <= self.occlusion_distance
        return d, cand

    def pair_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d, cand = self.candidates(a, b)
        out = np.full(len(d), 999, np.int32)
        for i in np.flatnonzero(cand):
            if d[i] <= self.rules.link_distance:
                out[i] = 0
            elif self.verdict(int(a[i]), int(b[i])).verified(self.rules):
                out[i] = 0
        return out


@dataclass
class _Candidates:
    """A verified method's candidate pairs as a distance (0 = candidate), for the exhaustive count."""

    method: VerifiedMethod

    def pair_distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(self.method.candidates(a, b)[1], 0, 999).astype(np.int32)


def configured() -> tuple[int, str]:
    """(max_distance, the stage variant) of configs/sample.toml's [dedup.rules]."""
    from jobs.stages.config import load_config

    rules = load_config(str(REPO / "configs" / "sample.toml")).dedup.rules
    variant = "+".join(
        ["crop"] + [name for name, on in (("aspect", rules.keys.aspect_windows), ("trim", rules.keys.trim_borders)) if on]
    )
    return rules.links.max_distance, variant


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distance", type=int, default=None, help="Hamming k (default: configs/sample.toml's)")
    ap.add_argument("--copies", type=int, default=3, help="edited copies per hard edit class and photo")
    ap.add_argument("--negatives", type=int, default=5, help="negative pairs per positive pair (at least)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="also print recall/precision for k = 0..12")
    ap.add_argument("--no-pdq", action="store_true", help="skip PDQ (pdqhash not installed)")
    ap.add_argument("--no-exhaustive", action="store_true", help="skip the exhaustive negative pairs")
    ap.add_argument("--no-verify", action="store_true", help="skip the rotated windows and ORB verification (the verified mode)")
    args = ap.parse_args(argv)
    k_config, stage = configured()
    k = k_config if args.distance is None else args.distance
    started = time.perf_counter()
    bench = build_set(args.copies, args.negatives, args.seed)
    pa_, pb, plabel = _pairs(bench.pos)
    na, nb, nlabel = _pairs(bench.neg)
    kinds = {kind: int((nlabel == kind).sum()) for kind in dict.fromkeys(nlabel.tolist())}
    print(f"{len(bench.data)} images from {len(set(bench.group.tolist()))} photos and logos; {len(bench.pos)} positive pairs, "
          f"{len(bench.neg)} negative pairs ({', '.join(f'{v} {k_}' for k_, v in kinds.items())}); built in "
          f"{time.perf_counter() - started:.0f} s")
    results = keys_many(bench.data, aspect_windows=True, trim_borders=True)
    print(f"bars found (trimmed key added) on {sum(len(r.windows) > N_CROP + N_ASPECT for r in results)} of {len(results)} images")
    blank = [bench.names[i] for i, r in enumerate(results) if r.blank]
    print(f"blank (no robust key): {blank or 'none'}")
    methods: dict[str, object] = dict(key_methods(results))
    thresholds: dict[str, int] = {name: k for name in methods}
    print(f"the sample config's stage: robust key + windows '{stage}' at k = {k_config}")
    rules = VerifyRules()
    verified: VerifiedMethod | None = None
    if not args.no_verify:
        import cv2

        cv2.setNumThreads(1)
        grays = [upright_gray(blob) for blob in bench.data]
        thumbs = [resize_gray_32(g) for g in grays]
        sizes = [(g.shape[1], g.shape[0]) for g in grays]
        rotated, deep, occluded = new_window_keys(thumbs, sizes)
        base = methods[stage]
        extra, deeper = _as_u64(rotated, base), _as_u64(deep, base)
        methods["rot"] = KeyMethod(base.keys, base.ok, np.concatenate([base.windows, extra], axis=1))
        methods["rot+deep"] = KeyMethod(base.keys, base.ok, np.concatenate([base.windows, extra, deeper], axis=1))
        methods["occlusion"] = WindowWindowMethod(_as_u64(occluded, base), base.ok)
        deep_a_row = float(np.mean([len(d) for d in deep]))  # deep windows a row on average (their number follows the aspect)
        keys_a_row = base.windows.shape[1] + extra.shape[1] + deep_a_row
        features = [features_from_gray(g) for g in grays]
        methods["rot+deep+verify"] = VerifiedMethod(methods["rot+deep"], features, rules, Verdicts({}))
        verified = VerifiedMethod(methods["rot+deep"], features, rules, methods["rot+deep+verify"].verdicts, methods["occlusion"], OCCLUSION_DISTANCE)
        methods["verified"] = verified
        methods["verified-keypoints"] = VerifiedMethod(
            methods["rot+deep"], features, replace(rules, photometric=False), Verdicts({}), methods["occlusion"], OCCLUSION_DISTANCE
        )
        for name in ("rot", "rot+deep", "occlusion"):
            thresholds[name] = k
        thresholds["rot+deep+verify"], thresholds["verified"], thresholds["verified-keypoints"] = 0, 0, 0
        print(f"rotated windows: {extra.shape[1]} keys per image ({len(ROTATION_ANGLES)} angles x 2 signs x crop/fill); deep "
              f"aspect windows: {deep_a_row:.1f} a row on average, at most {deeper.shape[1]} (the lengths of crops "
              f"to {len(TARGET_ASPECTS)} common aspect ratios that keep {DEEP_MIN_LENGTH}..{DEEP_MAX_LENGTH} of an axis, places <= {DEEP_STEP} "
              f"of the window apart); "
              f"verified: keys within {rules.link_distance} linked, within {rules.candidate_distance} when ORB verifies "
              f"(>= {rules.min_inliers} inliers in >= {rules.min_cells} of 16 cells of each picture, or >= "
              f"{rules.min_photometric_inliers} inliers and >= {rules.min_agreement} of the pixel blocks agreeing), plus pairs with "
              f"occlusion windows within {OCCLUSION_DISTANCE} of each other when ORB verifies")
    if not args.no_pdq:
        pdq = pdq_hashes(bench.data)
        dp_pdq, dn_pdq = pdq.pair_distance(pa_, pb), pdq.pair_distance(na, nb)
        best = max(
            (t for t in range(0, 129) if _recall_precision(dp_pdq, dn_pdq, t)[1] >= TARGET_PRECISION),
            key=lambda t: (_recall_precision(dp_pdq, dn_pdq, t)[0], -t),
        )
        for t in sorted({*PDQ_DISTANCES, best}):
            methods[f"pdq@{t}"] = pdq
            thresholds[f"pdq@{t}"] = t
        print(f"pdq: best threshold with precision >= {TARGET_PRECISION} on the bench pairs: {best}")
    dp = {name: m.pair_distance(pa_, pb) for name, m in methods.items()}
    dn = {name: m.pair_distance(na, nb) for name, m in methods.items()}
    print("\n| method | threshold | recall | precision | false matches (kinds) |\n|---|---|---|---|---|")
    for name in methods:
        t = thresholds[name]
        recall, precision, fp = _recall_precision(dp[name], dn[name], t)
        false = sorted({str(lbl) for lbl, d in zip(nlabel, dn[name]) if d <= t})
        print(f"| {name} | {t} | {recall:.4f} | {precision:.4f} | {fp} ({', '.join(false) or '-'}) |")
    if args.sweep:
        for name in ("robust", stage):
            for kk in range(13):
                recall, precision, fp = _recall_precision(dp[name], dn[name], kk)
                print(f"  {name:8s} k={kk:2d}: recall {recall:.4f}  precision {precision:.4f} ({fp} false)")
    if verified is not None:
        print(f"\nverified at other candidate distances (occlusion windows within {OCCLUSION_DISTANCE}; link distance, inliers "
              f"and cells as above):")
        for cd in (4, 6, 8, 10, 12):
            other = VerifiedMethod(verified.keys, verified.features, replace(rules, candidate_distance=cd), verified.verdicts,
                                   verified.occlusion, OCCLUSION_DISTANCE)
            recall, precision, fp = _recall_precision(other.pair_distance(pa_, pb), other.pair_distance(na, nb), 0)
            plan = plan_bands(cd, 1_000_000)
            rows = round((1 + keys_a_row) * len(plan.tables))
            print(f"  candidates within {cd:2d}: recall {recall:.4f} precision {precision:.4f} ({fp} false); banded join at 1M "
                  f"rows: {len(plan.blocks)} blocks, {len(plan.tables)} tables of >= {plan.key_bits}-bit keys, {rows:,} band rows per image")
        print(f"verified at other pixel agreements (candidates within {rules.candidate_distance}; exhaustive false links: of files of "
              f"different photos, and of those the ones that are not both views of the stereo pair):")
        stereo = np.array(["motorcycle_" in name for name in bench.names])
        for agreement in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8):
            other = VerifiedMethod(verified.keys, verified.features, replace(rules, min_agreement=agreement), verified.verdicts,
                                   verified.occlusion, OCCLUSION_DISTANCE)
            dpa = other.pair_distance(pa_, pb)
            recall, precision, fp = _recall_precision(dpa, other.pair_distance(na, nb), 0)
            worst = min((dpa[plabel == c] <= 0).mean() for c in HARD_CLASSES)
            line = f"  agreement >= {agreement:.2f}: recall {recall:.4f} precision {precision:.4f} ({fp} false), lowest hard class {worst:.3f}"
            if not args.no_exhaustive:
                _, counts, pairs = _exhaustive_false_links(other, bench.group, [0], examples_per_chunk=None)
                apart = sum(1 for a, b in pairs[0] if not (stereo[a] and stereo[b]))
                line += f"; exhaustive false links {counts[0]:,} ({apart:,} not the stereo pair)"
            print(line)
    classes = list(dict.fromkeys(plabel.tolist()))
    shown = [n for n in methods if n != "robust"]
    print("\n| edit class | pairs | " + " | ".join(shown) + " |\n|---|---|" + "---|" * len(shown))
    per_class_ok = True
    for cls in classes:
        sel = plabel == cls
        cells = [f"{(dp[n][sel] <= thresholds[n]).mean():.3f}" for n in shown]
        if cls in HARD_CLASSES and (dp[stage][sel] <= k).mean() < TARGET_CLASS_RECALL:
            per_class_ok = False
        print(f"| {cls} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    if not args.no_exhaustive:
        print("\nexhaustive negatives (every pair of files of different photos):")
        done = set()
        for name, m in methods.items():
            if id(m) in done and name.startswith("pdq"):
                continue
            done.add(id(m))
            ts = [thresholds[n] for n in methods if methods[n] is m]
            total, counts, examples = _exhaustive_false_links(m, bench.group, ts)
            for t in ts:
                rate = counts[t] / total
                ex = ", ".join(f"{bench.names[a]} ~ {bench.names[b]}" for a, b in sorted(examples[t])[:3])
                print(f"  {name.split('@')[0]} <= {t}: {counts[t]:,} false links in {total:,} pairs = {rate:.2e} per pair "
                      f"-> ~{rate * 5e11:.2g} per 1M images (5e11 pairs){'; e.g. ' + ex if ex else ''}")
        if verified is not None:
            total, counts, _ = _exhaustive_false_links(_Candidates(verified), bench.group, [0])
            rate = counts[0] / total
            print(f"  verified: candidates (keys within {rules.candidate_distance}, occlusion windows within {OCCLUSION_DISTANCE}) "
                  f"= pairs it verifies: {counts[0]:,} in {total:,} = {rate:.2e} per pair -> ~{rate * 5e11:.2g} per 1M images")
    options = {"aspect_windows": "aspect" in stage, "trim_borders": "trim" in stage}
    t_plain = _cpu(lambda: phash_many(bench.data))
    t_crop = _cpu(lambda: keys_many(bench.data))
    t_all = _cpu(lambda: keys_many(bench.data, aspect_windows=True, trim_borders=True))
    t_stage = _cpu(lambda: keys_many(bench.data, **options)) if any(options.values()) else t_crop
    ratio = t_stage / t_plain
    per = lambda t: f"{1000 * t / len(bench.data):.2f} ms"  # noqa: E731
    print(f"\ncost per image: phash {per(t_plain)}; keys_many: crop windows {per(t_crop)} ({t_crop / t_plain:.2f}x), "
          f"crop + aspect + trim {per(t_all)} ({t_all / t_plain:.2f}x); the sample config's ({stage}): {ratio:.2f}x "
          f"(target <= {TARGET_COST})")
    if verified is not None:
        t_rot = _cpu(lambda: new_window_keys(thumbs, sizes))  # noqa: F821
        t_orb = _cpu(lambda: [features_from_gray(g) for g in grays])
        t_new = t_stage + t_rot + t_orb
        stored = np.mean([len(pack_features(f)) for f in features])
        print(f"verified mode (one core, CPU time): rotated + deep + occlusion window keys {per(t_rot)} ({t_rot / t_plain:.2f}x pHash), ORB features "
              f"{per(t_orb)} ({t_orb / t_plain:.2f}x) on the decoded grayscale; stage keys + rotated, deep and occlusion windows + ORB = {t_new / t_plain:.2f}x pHash "
              f"(target <= {TARGET_COST}); verification {1e3 * verified.verdicts.seconds / max(1, len(verified.verdicts.by_pair)):.3f} ms "
              f"per pair ({len(verified.verdicts.by_pair):,} pairs); storage per row: {stored:.0f} bytes of features: keypoints + tiny copy (at most "
              f"{PACKED_MAX}) + {8 * (extra.shape[1] + deep_a_row + len(occluded[0])):.0f} bytes of rotated + deep + occlusion window keys (average)")
        recall_v, precision_v, _ = _recall_precision(dp["verified"], dn["verified"], 0)
        hard_v = all((dp["verified"][plabel == c] <= 0).mean() >= TARGET_CLASS_RECALL for c in HARD_CLASSES)
        met = recall_v >= TARGET_RECALL and precision_v >= TARGET_PRECISION and hard_v and t_new / t_plain <= TARGET_COST
        print(f"targets (verified): recall {recall_v:.3f} at precision {precision_v:.4f}, every hard class >= "
              f"{TARGET_CLASS_RECALL}: {hard_v}, cost {t_new / t_plain:.2f}x: {'met' if met else 'NOT met'}")
    recall, precision, _ = _recall_precision(dp[stage], dn[stage], k)
    ok = recall >= TARGET_RECALL and precision >= TARGET_PRECISION and per_class_ok and ratio <= TARGET_COST
    print(f"targets ({stage} at k = {k}: recall >= {TARGET_RECALL} at precision >= {TARGET_PRECISION}, every hard class >= "
          f"{TARGET_CLASS_RECALL}, cost <= {TARGET_COST}x): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
