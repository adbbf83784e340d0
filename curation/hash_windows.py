"""Rotated window keys (issue 19): the robust dedup key of an image turned by a few angles.

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
curation.hashing.keys_many already made), with the turn done in the picture's true proportions (the
thumbnail squashes width and height to 32 each): one 32x32 affine warp and one 8x32 DCT per window,
no decode and no resize of the image. The keys are curation.hashing's robust keys (canonical over the 8
rotations/flips). Linked like the crop windows: a row's key against the other row's window keys.
"""

from __future__ import annotations

import math

import numpy as np

from curation.dct_key import block_keys, robust_keys_from_pixels, window_axis
from curation.phash import DCT_LOW, IMG_SIZE

ROTATION_ANGLES = (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0)  # 3-30 degree turns within 2 degrees of one


def inscribed_scale(width: float, height: float, angle_deg: float) -> float:
    """Largest s such that a centred s*width x s*height rectangle fits inside the picture turned by angle."""
    a = math.radians(abs(angle_deg))
    return 1.0 / (math.cos(a) + math.sin(a) * max(width / height, height / width))


def unrotated_extent(width: float, height: float, angle_deg: float) -> tuple[float, float] | None:
    """(w, h) of the picture that, turned by angle onto an expanded canvas, gives a width x height canvas:
    W = w cos + h sin, H = w sin + h cos; None when no positive solution."""
    a = math.radians(abs(angle_deg))
    c, s = math.cos(a), math.sin(a)
    det = c * c - s * s
    if det <= 1e-6:
        return None
    w = (width * c - height * s) / det
    h = (height * c - width * s) / det
    return (w, h) if w > 4 and h > 4 else None


def _grid_map(size: tuple[float, float], thumb: int, angle: float, box: tuple[float, float]) -> list[list[float]]:
    """2x3 map from a 32x32 output grid over the centred box (bw, bh) of a picture of size (w, h) turned
    by ``angle`` degrees about its centre, to pixel positions in the picture's thumb x thumb thumbnail
    (which squashes w and h to ``thumb`` each: the turn is done in true proportions)."""
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
    return [
        [sx * c * du, sx * s * dv, sx * (c * x0 + s * y0 + w / 2) - 0.5],
        [-sy * s * du, sy * c * dv, sy * (-s * x0 + c * y0 + h / 2) - 0.5],
    ]


def rotated_from_thumbnail(thumb: np.ndarray, width: int, height: int, angles: tuple[float, ...] = ROTATION_ANGLES) -> np.ndarray:
    """(4 * len(angles), 32, 32) uint8: per angle and sign, the turned + cropped and the turned back +
    uncropped windows (module doc) of a width x height picture, from its 32x32 thumbnail; a fill window
    without a solution (angle too large for the aspect) repeats the crop window."""
    import cv2

    src = np.ascontiguousarray(thumb, np.uint8)
    n = src.shape[0]
    out = []
    for a in angles:
        for signed in (a, -a):
            s = inscribed_scale(width, height, signed)
            crop_map = np.array(_grid_map((width, height), n, signed, (width * s, height * s)))
            crop = cv2.warpAffine(src, crop_map, (IMG_SIZE, IMG_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            out.append(crop)
            extent = unrotated_extent(width, height, signed)
            if extent is None:
                out.append(crop)
                continue
            fill_map = np.array(_grid_map((width, height), n, -signed, extent))
            out.append(cv2.warpAffine(src, fill_map, (IMG_SIZE, IMG_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


def rotated_window_keys(thumb: np.ndarray, width: int, height: int, angles: tuple[float, ...] = ROTATION_ANGLES) -> tuple[str, ...]:
    """Robust keys (16 hex) of rotated_from_thumbnail: 4 * len(angles) window keys."""
    return tuple(robust_keys_from_pixels(rotated_from_thumbnail(thumb, width, height, angles)))


# Deep aspect windows: a copy cropped to another aspect ratio (1:1, 16:9, 9:16, 2:1 ... of a 4:3 photo)
# keeps as little as 40 % of one axis, anywhere along it; curation.hashing's aspect windows stop at 60 %
# and sit at the start, centre or end only. These keep one axis whole and DEEP_LENGTHS of the other at
# DEEP_PLACES (fractions of the free range), resampled from the 32x32 thumbnail like the rotated ones.
DEEP_LENGTHS = (0.75, 0.65, 0.55, 0.47, 0.4)
DEEP_PLACES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _band_matrices(lengths: tuple[float, ...], places: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(W, 32, 32) row and column sampling matrices of windows that keep one axis whole and take each of
    ``lengths`` of the other at each of ``places`` (0 = its start, 1 = its end): window = R @ P @ C.T."""
    whole = window_axis(0.0, float(IMG_SIZE))
    rows, cols = [], []
    for axis in (0, 1):
        for length in lengths:
            for place in places:
                part = window_axis(place * (1 - length) * IMG_SIZE, length * IMG_SIZE)
                rows.append(part if axis == 0 else whole)
                cols.append(whole if axis == 0 else part)
    return np.stack(rows), np.stack(cols)


_DEEP = _band_matrices(DEEP_LENGTHS, DEEP_PLACES)
_DEEP_LOW = (DCT_LOW @ _DEEP[0], DCT_LOW @ _DEEP[1])  # (W, 8, 32) each: the window's low DCT block directly


def deep_aspect_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """(N, W, 32, 32) float: per 32x32 thumbnail of a (N, 32, 32) batch, its W = 2 * len(DEEP_LENGTHS) *
    len(DEEP_PLACES) deep aspect windows (rows windows (a band of rows, all columns) first)."""
    p = np.asarray(thumbs, np.float64)[:, None]  # (N, 1, 32, 32)
    rows, cols = _DEEP
    return rows[None] @ p @ np.swapaxes(cols, 1, 2)[None]


def deep_aspect_keys(thumbs: np.ndarray) -> list[tuple[str, ...]]:
    """Robust keys (16 hex) of each thumbnail's deep aspect windows, equal to the robust keys of
    deep_aspect_thumbnails (the sampling folded into the DCT, as curation.hashing's windows)."""
    return _window_keys(thumbs, _DEEP_LOW)


def _window_keys(thumbs: np.ndarray, low_matrices: tuple[np.ndarray, np.ndarray]) -> list[tuple[str, ...]]:
    """Per (32, 32) thumbnail of ``thumbs``, the robust keys of the W windows whose (W, 8, 32) row and
    column matrices give each window's low DCT block directly."""
    p = np.asarray(thumbs, np.float64)
    n = len(p)
    if n == 0:
        return []
    rows, cols = low_matrices
    w = len(rows)
    low = rows[None] @ p[:, None] @ np.swapaxes(cols, 1, 2)[None]  # (N, W, 8, 8)
    keys = block_keys(low.reshape(n * w, 8, 8))
    return [tuple(keys[i * w : (i + 1) * w]) for i in range(n)]


# Occlusion windows: a caption band, a sticker or a local edit over 5-25 % of a copy moves its whole key
# (the low DCT terms are global), and no window of the *original* looks like the covered copy. But the
# copy and the original share every window that misses the covered part: the picture without its top or
# bottom band, without its left or right side. So these windows (one axis whole, OCCLUSION_LENGTHS of
# the other, at its start and end: 2 x 3 x 2 = 12) are matched window against window (any of one row's
# with any of the other's), unlike the other windows, which are matched against the other row's key.
OCCLUSION_LENGTHS = (0.8, 0.7, 0.55)


_OCCLUSION = _band_matrices(OCCLUSION_LENGTHS, (0.0, 1.0))
_OCCLUSION_LOW = (DCT_LOW @ _OCCLUSION[0], DCT_LOW @ _OCCLUSION[1])


def occlusion_keys(thumbs: np.ndarray) -> list[tuple[str, ...]]:
    """Robust keys (16 hex) of each (N, 32, 32) thumbnail's 12 occlusion windows (rows bands first)."""
    return _window_keys(thumbs, _OCCLUSION_LOW)