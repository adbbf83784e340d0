"""The robust dedup key: EXIF-upright, alpha composited, invariant to the 8 rotations/flips, None for
blank images; with it the keys of crop windows, optionally aspect windows and the key of the picture
inside letterbox / pillarbox bars. It comes from the same decode as the pHash (curation.imagehash.perceptual).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from curation.imagehash.dct_key import canonical_block, robust_keys_from_pixels, window_axis, window_keys
from curation.imagehash.windows import deep_aspect_keys, occlusion_keys, rotated_window_keys_many
from curation.imagehash.keypoints import features_from_gray, pack_features
from curation.imagehash.perceptual import (
    DECODE_ERRORS,
    IMG_SIZE,
    DCT_LOW,
    PhashMode,
    UndecodableImage,
    hashes_from_pixels,
    one_blas_thread,
    open_image,
    resize_gray_32,
    thumbnail_fast,
)

# --- the robust dedup key: EXIF-upright, alpha composited, invariant to the 8 rotations/flips -----
#
# ``image_phash`` above stays imagehash's (a released column). The dedup key is separate:
#
# - alpha is composited on ``KEY_BACKGROUND`` (white) before the grayscale conversion, so a transparent
#   logo and its white-background copy look the same, and two different logos (whose transparent
#   pixels are black: imagehash sees both as all-black) do not;
# - the image is EXIF-transposed (done on the 32x32 thumbnail: the key is dihedral-invariant, so this
#   only matters for the blank statistics, never for the key's bits);
# - the key is the pHash of one canonical variant among the 8 dihedral ones (rotations by 0/90/180/270
#   degrees, each mirrored or not), chosen from the coefficients themselves (canonical_block). All 8
#   come from the one 8x8 low block C of the 32x32 DCT-II: mirroring the columns multiplies column j by
#   (-1)^j, mirroring the rows row i by (-1)^i, transposing gives C.T; no extra DCT. The canonical
#   block is thresholded at its own median (sign flips change the median);
# - blank / low-information images (std of the composited 32x32 grayscale under ``blank_std``, or less
#   than ``blank_min_alpha`` of the pixels visible) get no key: dedup rejects them as ``blank_image``.

KEY_BACKGROUND = 255  # fixed gray level transparent pixels are composited on
EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the numpy operation that makes a stored (rows, cols) thumbnail upright
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}


@dataclass(frozen=True)
class KeyResult:
    """Both hashes of one image from one decode: ``phash`` (imagehash's, 16 hex) and ``key`` (the
    robust dedup key, 16 hex, None when blank); ``blank`` says why an image is blank (None otherwise)."""

    phash: str | None
    key: str | None = None
    blank: str | None = None
    error: str | None = None
    windows: tuple[str, ...] = ()  # keys of the crop windows (window_keys_from_pixels); () when blank
    features: bytes | None = None  # packed ORB keypoints (local_features=True); None when blank or off
    occlusion: tuple[str, ...] = ()  # occlusion window keys (occlusion_windows=True); () when blank or off


# Crop windows. A copy cropped by a few per cent is, resized to 32x32, the original's matching window
# resized: so each image also gets the keys of WINDOW_SCALES-sized windows at its four corners and
# centre (sides 98, 96, 94 and 92 %: crops of 4 to 15 % of the area, and anything near them), and a
# copy's full key is compared with the other image's window keys. Crops that change the aspect ratio
# (a strip cut from one side only) are not covered. Each window is resampled from the
# 32x32 thumbnail by linear interpolation folded into the DCT (an (8, 32) matrix per axis), so a
# window key costs two small matrix products, no decode or resize. The set of windows is closed under
# the 8 rotations/flips (corners map to corners) and each window key is canonical: the window keys of a
# rotated copy are the original's, in another order.
WINDOW_SCALES = (0.98, 0.96, 0.94, 0.92)
WINDOW_PLACES = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")


def _window_matrices() -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) (8, 32) matrices per window: low block of a window = R @ pixels @ C.T."""
    out = []
    for scale in WINDOW_SCALES:
        length = IMG_SIZE * scale
        far, mid = IMG_SIZE - length, (IMG_SIZE - length) / 2
        for place in WINDOW_PLACES:
            r0 = mid if place == "centre" else (0.0 if place.startswith("top") else far)
            c0 = mid if place == "centre" else (0.0 if place.endswith("left") else far)
            out.append((DCT_LOW @ window_axis(r0, length), DCT_LOW @ window_axis(c0, length)))
    return out


_WINDOWS = _window_matrices()
_CROP_LOW = (np.stack([r for r, _ in _WINDOWS]), np.stack([c for _, c in _WINDOWS]))


# Aspect windows (``aspect=True``): windows that keep one axis whole and take ASPECT_LENGTHS of
# the other, at its start, centre or end: a copy cut by a strip on one side, or cropped to another aspect
# ratio and resized, is the original's matching aspect window. 2 axes x 6 lengths x 3 places = 36 more
# window keys, closed under the 8 rotations/flips like the crop windows.
ASPECT_LENGTHS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
ASPECT_PLACES = ("start", "centre", "end")


def _aspect_matrices() -> list[tuple[np.ndarray, np.ndarray]]:
    whole = DCT_LOW @ window_axis(0.0, float(IMG_SIZE))
    out = []
    for axis in ("rows", "cols"):
        for scale in ASPECT_LENGTHS:
            length = IMG_SIZE * scale
            for place in ASPECT_PLACES:
                start = {"start": 0.0, "centre": (IMG_SIZE - length) / 2, "end": IMG_SIZE - length}[place]
                part = DCT_LOW @ window_axis(start, length)
                out.append((part, whole) if axis == "rows" else (whole, part))
    return out


_ASPECT_WINDOWS = _aspect_matrices()
_CROP_ASPECT_LOW = tuple(np.concatenate([m, np.stack([w[i] for w in _ASPECT_WINDOWS])]) for i, m in enumerate(_CROP_LOW))


def window_keys_from_pixels(pixels: np.ndarray, aspect: bool = False) -> list[tuple[str, ...]]:
    """Per image of a (N, 32, 32) batch, the keys of its len(WINDOW_SCALES) * 5 crop windows (and, with
    ``aspect``, then those of its 36 aspect windows)."""
    return window_keys(pixels, *(_CROP_ASPECT_LOW if aspect else _CROP_LOW))


# Border trimming (``trim=True``): letterbox / pillarbox bars (flat black, white or any flat
# colour, or the picture itself enlarged and blurred) are found on a ~TRIM_SCAN_PX copy of the grayscale
# image: a run of edge rows (columns) that are flat (std under TRIM_FLAT_STD) or nearly detail-free
# (mean absolute gradient under TRIM_SMOOTH of the picture's median row), on *both* sides of an axis, of
# similar depth (within TRIM_SYMMETRY of the side), each at least TRIM_MIN of it, leaving at least
# TRIM_MAX_CUT of the picture. The key of the picture inside them is added to the row's window keys (the
# row's own key is unchanged), so a barred copy links to the original's key.
TRIM_SCAN_PX = 128
TRIM_FLAT_STD = 4.0
TRIM_SMOOTH = 0.12
TRIM_SYMMETRY = 0.04
TRIM_MIN = 0.03
TRIM_MAX_CUT = 0.6  # bars may take at most this fraction of a side


def _bar_runs(flat: np.ndarray) -> tuple[int, int]:
    """Lengths of the leading and trailing runs of True."""
    n = len(flat)
    lead = n if flat.all() else int(np.argmin(flat))
    trail = n if flat.all() else int(np.argmin(flat[::-1]))
    return lead, trail


def _axis_bars(g: np.ndarray) -> tuple[int, int] | None:
    """(first, end) of the picture between bars along axis 0 of a small float grayscale, or None."""
    n = g.shape[0]
    std = g.std(axis=1)
    detail = np.abs(np.diff(g, axis=1)).mean(axis=1)
    middle = detail[n // 4 : n - n // 4]
    reference = float(np.median(middle)) if len(middle) else 0.0
    if reference <= 0:
        return None
    bar = (std < TRIM_FLAT_STD) | (detail < TRIM_SMOOTH * reference)
    lead, trail = _bar_runs(bar)
    if min(lead, trail) < max(1, TRIM_MIN * n) or lead + trail > TRIM_MAX_CUT * n:
        return None
    if abs(lead - trail) > TRIM_SYMMETRY * n + 1:
        return None
    return lead + 1, n - trail - 1  # one more row each side: the seam (JPEG ringing, resampling)


def trimmed_thumbnail(gray: np.ndarray) -> np.ndarray | None:
    """The 32x32 thumbnail of the picture inside letterbox / pillarbox bars, or None without bars."""
    h, w = gray.shape
    step = max(1, min(h, w) // TRIM_SCAN_PX)
    small = gray[::step, ::step].astype(np.float64)
    rows, cols = _axis_bars(small), _axis_bars(small.T)
    if rows is None and cols is None:
        return None
    r0, r1 = (rows[0] * step, min(h, rows[1] * step)) if rows else (0, h)
    c0, c1 = (cols[0] * step, min(w, cols[1] * step)) if cols else (0, w)
    if r1 - r0 < 8 or c1 - c0 < 8:
        return None
    return resize_gray_32(np.ascontiguousarray(gray[r0:r1, c0:c1]))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info)


def composited_gray(image: Image.Image) -> tuple[np.ndarray, float]:
    """Full-size grayscale (uint8) of the image composited on KEY_BACKGROUND, and the fraction of visible pixels."""
    rgba = image.convert("LA") if image.mode in ("LA", "La") else image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), np.float64) / 255.0
    gray = np.asarray(rgba.convert("RGB").convert("L") if rgba.mode == "RGBA" else rgba.getchannel("L"), np.float64)
    return np.rint(gray * alpha + KEY_BACKGROUND * (1.0 - alpha)).astype(np.uint8), float((alpha > 0).mean())


def _composited(image: Image.Image) -> tuple[np.ndarray, float]:
    """32x32 grayscale of the image composited on KEY_BACKGROUND, and the fraction of visible pixels."""
    flat, visible = composited_gray(image)
    return resize_gray_32(flat), visible


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the picture made upright by its EXIF orientation (5..8 swap the axes)."""
    w, h = image.size
    return (h, w) if _orientation(image) in (5, 6, 7, 8) else (w, h)


def _features(image: Image.Image, gray: np.ndarray | None, composite: tuple[np.ndarray, float] | None = None) -> bytes:
    """Packed ORB keypoints of the decoded grayscale (alpha composited: ``composite`` when the caller
    has it; orientation does not matter: the verification fits any rotation)."""
    if _has_alpha(image):
        gray = (composite or composited_gray(image))[0]
    elif gray is None:
        gray = np.asarray(image.convert("L"))
    return pack_features(features_from_gray(gray))


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except DECODE_ERRORS:
        return 1


def key_thumbnail(image: Image.Image, phash_thumb: np.ndarray, composite: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, float]:
    """The dedup key's 32x32 thumbnail (upright, composited) and the visible fraction; images without
    alpha reuse the pHash thumbnail (no second decode or resize), images with alpha the caller's
    composited_gray when given."""
    if not _has_alpha(image):
        thumb, visible = phash_thumb, 1.0
    else:
        thumb, visible = (resize_gray_32(composite[0]), composite[1]) if composite else _composited(image)
    upright = _UPRIGHT.get(_orientation(image))
    return (np.ascontiguousarray(upright(thumb)) if upright else thumb), visible


def blank_reason(thumb: np.ndarray, visible: float, blank_std: float, blank_min_alpha: float) -> str | None:
    """Why an image is blank / low-information, or None: near-uniform or mostly transparent."""
    std = float(thumb.astype(np.float64).std())
    if visible < blank_min_alpha:
        return f"{visible:.1%} of pixels visible (< {blank_min_alpha:.1%})"
    if std < blank_std:
        return f"near-uniform: std {std:.2f} of 32x32 gray (< {blank_std:g})"
    return None


@one_blas_thread
def keys_many(
    items: Iterable[bytes | None],
    mode: PhashMode | str = PhashMode.EXACT,
    blank_std: float = 3.0,
    blank_min_alpha: float = 0.05,
    aspect_windows: bool = False,
    trim_borders: bool = False,
    rotation_windows: bool = False,
    deep_windows: bool = False,
    occlusion_windows: bool = False,
    local_features: bool = False,
) -> list[KeyResult]:
    """pHash (as phash_many) and the robust dedup key of each encoded image, from one decode each; the
    window keys are, in this order, the crop windows' (20), the aspect windows' with ``aspect_windows``
    (36), the rotated windows' with ``rotation_windows`` (40, curation.imagehash.windows), the deep aspect
    windows' with ``deep_windows`` (their number follows the aspect ratio: 96 for a 4:3 picture), and
    last, with ``trim_borders``, the key of the picture inside letterbox / pillarbox bars when it has
    some. ``occlusion_windows`` fills ``occlusion`` (12 band windows and 3 masked centres, matched window
    against window), ``local_features`` fills ``features`` (packed ORB keypoints and a 64 px copy)."""
    mode = PhashMode(mode)
    thumbs, key_thumbs, blanks, trimmed, sizes, features = [], [], [], [], [], []
    results: list[KeyResult | None] = []
    for data in items:
        try:
            if data is None:
                raise UndecodableImage("no image bytes")
            image = open_image(data)
            try:
                trim = gray = None
                size = _upright_size(image)
                if mode == PhashMode.FAST:
                    thumb = thumbnail_fast(image)
                    if trim_borders and not _has_alpha(image):
                        trim = trimmed_thumbnail(np.asarray(image.convert("L")))
                else:
                    gray = np.asarray(image.convert("L"))
                    thumb = resize_gray_32(gray)
                    if trim_borders and not _has_alpha(image):
                        trim = trimmed_thumbnail(gray)
                composite = composited_gray(image) if _has_alpha(image) else None  # once, for the key and the features
                kthumb, visible = key_thumbnail(image, thumb, composite)
                if trim is not None:
                    upright = _UPRIGHT.get(_orientation(image))  # (the key is dihedral-invariant: for symmetry only)
                    trim = np.ascontiguousarray(upright(trim)) if upright else trim
                if local_features:  # fast mode decoded a small draft: decode the picture again at full size
                    features.append(_features(image, gray, composite) if gray is not None else _features(open_image(data), None))
            except DECODE_ERRORS as e:
                raise UndecodableImage(f"cannot decode image: {type(e).__name__}: {e}") from e
        except UndecodableImage as e:
            results.append(KeyResult(None, error=str(e)))
            continue
        thumbs.append(thumb)
        key_thumbs.append(kthumb)
        blanks.append(blank_reason(kthumb, visible, blank_std, blank_min_alpha))
        trimmed.append(trim)
        sizes.append(size)
        results.append(None)
    empty = np.zeros((0, IMG_SIZE, IMG_SIZE), np.uint8)
    hashes = iter(hashes_from_pixels(np.stack(thumbs) if thumbs else empty))
    stacked = np.stack(key_thumbs) if key_thumbs else empty
    keys, windows = iter(robust_keys_from_pixels(stacked)), iter(window_keys_from_pixels(stacked, aspect_windows))
    with_bars = [t for t in trimmed if t is not None]
    trim_keys = iter(robust_keys_from_pixels(np.stack(with_bars)) if with_bars else [])
    none = [()] * len(key_thumbs)
    deep = iter(deep_aspect_keys(stacked, sizes) if deep_windows and key_thumbs else none)
    turned = [i for i, b in enumerate(blanks) if not b] if rotation_windows else []
    rotated = dict(zip(turned, rotated_window_keys_many(stacked[turned], [sizes[i] for i in turned]))) if turned else {}
    occluded = iter(occlusion_keys(stacked) if occlusion_windows and key_thumbs else none)
    blank, trims = iter(blanks), iter(trimmed)
    feats = iter(features if local_features else [None] * len(key_thumbs))
    out = []
    row = -1
    for r in results:
        if r is not None:
            out.append(r)
            continue
        row += 1
        h, k, w, b, t = next(hashes), next(keys), next(windows), next(blank), next(trims)
        d, o, f = next(deep), next(occluded), next(feats)
        if b:
            out.append(KeyResult(h, None, b))
            continue
        w = (*w, *rotated.get(row, ()), *d)
        if t is not None:
            w = (*w, next(trim_keys))
        out.append(KeyResult(h, k, None, windows=w, features=f, occlusion=tuple(o)))
    return out


def robust_key(data: bytes, mode: PhashMode | str = PhashMode.EXACT) -> str | None:
    """The robust dedup key of one encoded image (None when blank); raises UndecodableImage."""
    r = keys_many([data], mode)[0]
    if r.phash is None:
        raise UndecodableImage(r.error)
    return r.key
