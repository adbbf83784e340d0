"""Rotated window keys: the robust dedup key of an image turned by a few angles.

A copy rotated by 3-30 degrees is neither a crop nor a dihedral variant of the original, so its key lands
far from the original's key and from every crop / aspect window key. Each image therefore also gets, for
each angle a in ``ROTATION_ANGLES`` and both signs, two window keys:

- **turned + cropped**: the picture turned by a, cropped to the largest centred rectangle of its own
  aspect that holds only picture (what a "rotate and crop" edit produces): an original's window key then
  matches its rotated-and-cropped copy's key;
- **turned back + uncropped** (``fill``): the picture turned by -a and cropped to the extent the
  original had if this picture is that original turned by a onto a larger canvas (Pillow's
  ``rotate(expand=True)``, corners filled): a filled copy's window key then matches the original's key.

Both are resampled from the dedup key's own 32x32 thumbnail (upright, alpha composited: the one
curation.imagehash.keys_many already made), with the turn done in the picture's true proportions (the
thumbnail squashes width and height to 32 each): one 32x32 affine warp and one DCT per window, no
decode and no resize of the image; rotated_window_keys_many does the warps of a whole batch in one
cv2.remap and its DCTs in one matrix product. The keys are curation.imagehash's robust keys (canonical
over the 8 rotations/flips). Linked like the crop windows: a row's key against the other row's window keys.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from curation.imagehash.dct_key import robust_keys_from_pixels, window_axis, window_keys
from curation.imagehash.perceptual import DCT_LOW, IMG_SIZE

ROTATION_ANGLES = tuple(float(a) for a in range(3, 31, 3))  # 3-30 degree turns within 1.5 degrees of one


def inscribed_scale(width, height, angle_deg: float):
    """Largest s such that a centred s*width x s*height rectangle fits inside the picture turned by angle
    (width and height may be arrays)."""
    a = math.radians(abs(angle_deg))
    return 1.0 / (math.cos(a) + math.sin(a) * np.maximum(width / height, height / width))


def _unrotated_extents(width, height, angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """unrotated_extent over arrays of widths and heights: (w, h, found)."""
    a = math.radians(abs(angle_deg))
    c, s = math.cos(a), math.sin(a)
    det = c * c - s * s
    if det <= 1e-6:
        zero = np.zeros(np.shape(width))
        return zero, zero, zero > 0
    w = (width * c - height * s) / det
    h = (height * c - width * s) / det
    return w, h, (w > 4) & (h > 4)


def unrotated_extent(width: float, height: float, angle_deg: float) -> tuple[float, float] | None:
    """(w, h) of the picture that, turned by angle onto an expanded canvas, gives a width x height canvas:
    W = w cos + h sin, H = w sin + h cos; None when no positive solution."""
    w, h, found = _unrotated_extents(width, height, angle_deg)
    return (float(w), float(h)) if found else None


def _grid_map(size, thumb: int, angle: float, box) -> np.ndarray:
    """(..., 2, 3) maps from a 32x32 output grid over the centred box (bw, bh) of a picture of size (w, h)
    turned by ``angle`` degrees about its centre, to pixel positions in the picture's thumb x thumb
    thumbnail (which squashes w and h to ``thumb`` each: the turn is done in true proportions); w, h,
    bw, bh may be arrays of many pictures."""
    w, h = size
    bw, bh = box
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    sx, sy = thumb / w, thumb / h
    # output (u, v) -> box point (x', y') centred at 0 -> turned back (x, y) -> thumbnail (sx*(x + w/2) - .5, ...)
    du, dv = bw / IMG_SIZE, bh / IMG_SIZE
    x0, y0 = -bw / 2 + du / 2, -bh / 2 + dv / 2
    # (x, y) = R(-a) (x', y'): x = c x' + s y', y = -s x' + c y'  (cv2's positive angle is counter-clockwise
    # with y down, as Pillow's rotate)
    terms = np.broadcast_arrays(
        sx * c * du, sx * s * dv, sx * (c * x0 + s * y0 + w / 2) - 0.5,
        -sy * s * du, sy * c * dv, sy * (-s * x0 + c * y0 + h / 2) - 0.5,
    )
    return np.stack(terms, axis=-1).astype(np.float64).reshape(*terms[0].shape, 2, 3)


def rotation_maps(sizes, thumb: int = IMG_SIZE, angles: tuple[float, ...] = ROTATION_ANGLES) -> np.ndarray:
    """(N, 4 * len(angles), 2, 3): per (width, height) of ``sizes``, the affine maps of its rotated
    windows (per angle and sign: turned + cropped, then turned back + uncropped, or the crop map again
    when no uncropped picture fits), from the output 32x32 grid to its thumb x thumb thumbnail."""
    dims = np.asarray(sizes, np.float64).reshape(-1, 2)  # integer sizes are exact: the same divisions as of ints
    width, height = dims[:, 0], dims[:, 1]
    out = []
    for a in angles:
        for signed in (a, -a):
            s = inscribed_scale(width, height, signed)
            crop = _grid_map((width, height), thumb, signed, (width * s, height * s))
            ew, eh, found = _unrotated_extents(width, height, signed)
            fill = _grid_map((width, height), thumb, -signed, (np.where(found, ew, 8.0), np.where(found, eh, 8.0)))
            out += [crop, np.where(found[:, None, None], fill, crop)]
    return np.stack(out, axis=1) if len(dims) else np.zeros((0, 4 * len(angles), 2, 3))


def rotated_from_thumbnail(thumb: np.ndarray, width: int, height: int, angles: tuple[float, ...] = ROTATION_ANGLES) -> np.ndarray:
    """(4 * len(angles), 32, 32) uint8: per angle and sign, the turned + cropped and the turned back +
    uncropped windows (module doc) of a width x height picture, from its 32x32 thumbnail; a fill window
    without a solution (angle too large for the aspect) repeats the crop window. One cv2.warpAffine
    (bilinear, edges replicated) per window: the reference rotated_windows_many reproduces in one batch."""
    import cv2

    src = np.ascontiguousarray(thumb, np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    maps = rotation_maps([(width, height)], src.shape[0], angles)[0]
    return np.stack([cv2.warpAffine(src, m, (IMG_SIZE, IMG_SIZE), flags=flags, borderMode=cv2.BORDER_REPLICATE) for m in maps])


def rotated_window_keys(thumb: np.ndarray, width: int, height: int, angles: tuple[float, ...] = ROTATION_ANGLES) -> tuple[str, ...]:
    """Robust keys (16 hex) of rotated_from_thumbnail: 4 * len(angles) window keys."""
    return rotated_window_keys_many([thumb], [(width, height)], angles)[0]


# Batched warps. cv2.warpAffine (INTER_LINEAR) turns each output pixel's source position into fixed
# point (AB_BITS fraction bits, rounded to 1/2**INTER_BITS of a pixel) and hands those positions to
# cv2.remap; _fixed_point_positions computes the same positions for every window of every picture
# at once, so that one cv2.remap over the stacked thumbnails gives, bit for bit, what one warpAffine
# per window gives (tests/curation/imagehash/test_windows.py compares them). Each thumbnail is stacked with
# a one-pixel replicated border and positions outside it clamped onto it: the same pixels
# BORDER_REPLICATE reads.
_AB_BITS, _INTER_BITS = 10, 5
_PAD = 1
_CHUNK = 8  # pictures per cv2.remap call: their per-pixel positions (8 x 40 windows x 1024) stay in cache


def _fixed_point_positions(maps: np.ndarray, n: int = IMG_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (K, 2, 3) map and output pixel of an n x n grid: integer source x, y (K, n, n) int32 and the
    bilinear weight index (1/32 pixel fractions: 32 * fy + fx), as cv2.warpAffine computes them."""
    scale = float(1 << _AB_BITS)
    tab = 1 << _INTER_BITS
    grid = np.arange(n, dtype=np.float64)
    rd = (1 << _AB_BITS) // tab // 2
    pos = []
    for r in (0, 1):
        along_x = np.rint(maps[:, r, 0, None] * grid * scale).astype(np.int32)  # (K, n): per output column
        along_y = np.rint((maps[:, r, 1, None] * grid + maps[:, r, 2, None]) * scale).astype(np.int32) + rd  # per row
        p = along_y[:, :, None] + along_x[:, None, :]
        p >>= _AB_BITS - _INTER_BITS
        pos.append(p)
    x, y = pos
    weights = y & (tab - 1)
    weights <<= _INTER_BITS
    weights |= x & (tab - 1)
    x >>= _INTER_BITS
    y >>= _INTER_BITS
    return x, y, weights


def rotated_windows_many(thumbs, sizes, angles: tuple[float, ...] = ROTATION_ANGLES) -> np.ndarray:
    """(N, 4 * len(angles), 32, 32) uint8: rotated_from_thumbnail of each 32x32 thumbnail and (width,
    height) of the picture, from one cv2.remap per _CHUNK pictures."""
    import cv2

    thumbs = np.asarray(thumbs, np.uint8).reshape(-1, IMG_SIZE, IMG_SIZE)
    count, windows = len(thumbs), 4 * len(angles)
    out = np.empty((count, windows, IMG_SIZE, IMG_SIZE), np.uint8)
    maps = rotation_maps(sizes, IMG_SIZE, angles)
    side = IMG_SIZE + 2 * _PAD
    chunk = max(1, min(_CHUNK, 32000 // max(1, windows)))  # output laid out as one 32 x 32 window a row
    for start in range(0, count, chunk):
        part = thumbs[start : start + chunk]
        stacked = np.pad(part, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)), mode="edge").reshape(-1, side)
        x, y, weights = _fixed_point_positions(maps[start : start + len(part)].reshape(-1, 2, 3))
        np.clip(x, -_PAD, IMG_SIZE - 1, out=x)
        x += _PAD
        np.clip(y, -_PAD, IMG_SIZE - 1, out=y)
        y += (np.arange(len(y), dtype=np.int32) // windows * side + _PAD)[:, None, None]
        y <<= 16
        y |= x  # both in [0, 2**15): little-endian int16 pairs (x, y), the layout cv2.remap reads
        xy = y.astype("<i4", copy=False).view("<i2").astype(np.int16, copy=False)
        size = IMG_SIZE * IMG_SIZE
        warped = cv2.remap(stacked, xy.reshape(-1, size, 2), weights.astype(np.uint16).reshape(-1, size), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[start : start + len(part)] = warped.reshape(len(part), windows, IMG_SIZE, IMG_SIZE)
    return out


def rotated_window_keys_many(thumbs, sizes, angles: tuple[float, ...] = ROTATION_ANGLES) -> list[tuple[str, ...]]:
    """Per 32x32 thumbnail and (width, height) of its picture, the robust keys (16 hex) of its 4 *
    len(angles) rotated windows (rotated_from_thumbnail), for a whole batch at once."""
    pixels = rotated_windows_many(thumbs, sizes, angles)
    if len(pixels) == 0:
        return []
    windows = pixels.shape[1]
    keys = robust_keys_from_pixels(pixels.reshape(-1, IMG_SIZE, IMG_SIZE))
    return [tuple(keys[i : i + windows]) for i in range(0, len(keys), windows)]


# Deep aspect windows: a copy cropped to another aspect ratio keeps one axis whole and a part of the other
# that the two ratios fix (a 4:3 photo cropped to 1:1 keeps 75 % of its width, to 9:16 42 %), anywhere
# along it; curation.imagehash's aspect windows stop at 60 % and sit at the start, centre or end only. So
# each picture gets, for each common aspect ratio of TARGET_ASPECTS whose largest crop keeps less than
# DEEP_MAX_LENGTH of an axis (and at least DEEP_MIN_LENGTH), windows of exactly that length, evenly spaced
# over the free range at most DEEP_STEP of the window's own length apart (the offset of a crop is anyone's
# choice, and a window key holds for a few per cent of shift only: short windows need more places),
# resampled from the 32x32 thumbnail like the rotated ones. A 4:3 picture gets 8 lengths, 96 keys; a 1:1
# one 8 lengths, 78 keys; a 2:1 one 7 lengths (down to DEEP_MIN_LENGTH), 106 keys.
# Crops to other ratios fall between lengths: the nearer ones still match.
TARGET_ASPECTS = (1.0, 5 / 4, 4 / 5, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 1 / 2)  # width / height
DEEP_MAX_LENGTH = 0.8
DEEP_MIN_LENGTH = 0.3  # narrower crops (a 9:16 story of a 2:1 panorama keeps 28 %) would cost 30+ keys a length
DEEP_STEP = 0.08


def deep_places(length: float) -> tuple[float, ...]:
    """Places (0 = the start of the free range, 1 = its end) of the windows of one length."""
    n = math.ceil((1 - length) / (DEEP_STEP * length) - 1e-9) + 1
    return tuple(i / (n - 1) for i in range(n)) if n > 1 else (0.5,)


def deep_lengths(width: float, height: float) -> tuple[tuple[int, float], ...]:
    """(axis, length) of a width x height picture's deep windows, in TARGET_ASPECTS' order: axis 0 keeps
    the whole width and ``length`` of the height (a wider crop), axis 1 the whole height and ``length`` of
    the width (a narrower crop); lengths rounded to 1/100, repeats dropped."""
    if width <= 0 or height <= 0:
        return ()
    aspect = width / height
    out: dict[tuple[int, float], None] = {}
    for target in TARGET_ASPECTS:
        axis, length = (1, target / aspect) if target < aspect else (0, aspect / target)
        if DEEP_MIN_LENGTH <= length < DEEP_MAX_LENGTH:
            out[(axis, round(length, 2))] = None
    return tuple(out)


# The matrices are cached per band (axis, length): pictures of every size share them (lengths are rounded
# to 1/100 of DEEP_MIN_LENGTH..DEEP_MAX_LENGTH: at most 2 x 51 bands), and a length set new to the process
# (one per aspect ratio, to 1/100) only concatenates cached parts. Cached per set instead, images of many
# sizes would rebuild ~100 window matrices each (~14 ms a picture, more than all its other keys).
@lru_cache(maxsize=None)
def _deep_band(band: tuple[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = _band_matrices((band,), deep_places(band[1]))
    return rows, cols, DCT_LOW @ rows, DCT_LOW @ cols  # low parts (W, 8, 32): the window's low DCT block directly


@lru_cache(maxsize=512)
def _deep_matrices(lengths: tuple[tuple[int, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_deep_band(band) for band in lengths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@lru_cache(maxsize=512)
def _deep_low(lengths: tuple[tuple[int, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_deep_band(band) for band in lengths]
    return np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])


def deep_aspect_thumbnails(thumb: np.ndarray, width: float, height: float) -> np.ndarray:
    """(W, 32, 32) float: the deep aspect windows (module doc) of a width x height picture from its 32x32
    thumbnail, ``deep_lengths`` order, ``deep_places`` within each; (0, 32, 32) when it has none."""
    lengths = deep_lengths(width, height)
    if not lengths:
        return np.zeros((0, IMG_SIZE, IMG_SIZE))
    rows, cols = _deep_matrices(lengths)
    return rows @ np.asarray(thumb, np.float64)[None] @ np.swapaxes(cols, 1, 2)


def deep_aspect_keys(thumbs: np.ndarray, sizes: list[tuple[float, float]]) -> list[tuple[str, ...]]:
    """Robust keys (16 hex) of each (32, 32) thumbnail's deep aspect windows, its picture being
    ``sizes[i]`` = (width, height): equal to the robust keys of deep_aspect_thumbnails (the sampling folded
    into the DCT, as curation.imagehash's windows); pictures with the same lengths are keyed in one batch."""
    groups: dict[tuple[tuple[int, float], ...], list[int]] = {}
    for i, (w, h) in enumerate(sizes):
        groups.setdefault(deep_lengths(w, h), []).append(i)
    out: list[tuple[str, ...]] = [()] * len(sizes)
    p = np.asarray(thumbs)
    for lengths, members in groups.items():
        if lengths:
            for i, keys in zip(members, window_keys(p[members], *_deep_low(lengths))):
                out[i] = keys
    return out


def _band_matrices(bands: tuple[tuple[int, float], ...], places: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(W, 32, 32) row and column sampling matrices of windows that keep one axis whole and take ``length``
    of the other (axis 0: a band of rows, all columns; 1: a band of columns) for each (axis, length) of
    ``bands``, at each of ``places`` (0 = its start, 1 = its end): window = R @ P @ C.T."""
    whole = window_axis(0.0, float(IMG_SIZE))
    rows, cols = [], []
    for axis, length in bands:
        for place in places:
            part = window_axis(place * (1 - length) * IMG_SIZE, length * IMG_SIZE)
            rows.append(part if axis == 0 else whole)
            cols.append(whole if axis == 0 else part)
    return np.stack(rows), np.stack(cols)


# Occlusion windows: a caption band, a sticker or a local edit over 5-25 % of a copy moves its whole key
# (the low DCT terms are global), and no window of the *original* looks like the covered copy. But the
# copy and the original share every window that misses the covered part: the picture without its top or
# bottom band, without its left or right side. So these windows (one axis whole, OCCLUSION_LENGTHS of
# the other, at its start and end: 2 x 3 x 2 = 12) are matched window against window (any of one row's
# with any of the other's), unlike the other windows, which are matched against the other row's key.
# An edit inside the picture leaves no such window clean: the picture with a centred square of
# MASKED_CENTRES of each side painted over with its mean gray (3 more keys, matched the same way) is
# what a copy edited there and its original still share.
OCCLUSION_LENGTHS = (0.8, 0.7, 0.55)
MASKED_CENTRES = (0.3, 0.45, 0.6)


_OCCLUSION = _band_matrices(tuple((axis, length) for axis in (0, 1) for length in OCCLUSION_LENGTHS), (0.0, 1.0))
_OCCLUSION_LOW = (DCT_LOW @ _OCCLUSION[0], DCT_LOW @ _OCCLUSION[1])


def masked_centres(thumbs: np.ndarray) -> np.ndarray:
    """(N, len(MASKED_CENTRES), 32, 32) float: each thumbnail with a centred square of each of MASKED_CENTRES
    of its side (whole pixels, symmetric) set to the thumbnail's mean."""
    p = np.asarray(thumbs, np.float64)
    out = np.repeat(p[:, None], len(MASKED_CENTRES), axis=1)
    mean = p.reshape(len(p), -1).mean(axis=1)
    for j, fraction in enumerate(MASKED_CENTRES):
        lo = round(IMG_SIZE * (1 - fraction) / 2)
        out[:, j, lo : IMG_SIZE - lo, lo : IMG_SIZE - lo] = mean[:, None, None]
    return out


def occlusion_keys(thumbs: np.ndarray) -> list[tuple[str, ...]]:
    """Robust keys (16 hex) of each (N, 32, 32) thumbnail's 12 occlusion windows (rows bands first), then
    of its len(MASKED_CENTRES) masked centres."""
    bands = window_keys(thumbs, *_OCCLUSION_LOW)
    if len(bands) == 0:
        return bands
    masked = masked_centres(thumbs)
    keys = robust_keys_from_pixels(masked.reshape(-1, IMG_SIZE, IMG_SIZE))
    m = len(MASKED_CENTRES)
    return [(*b, *keys[i * m : (i + 1) * m]) for i, b in enumerate(bands)]
