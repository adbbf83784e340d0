"""Perceptual hash (pHash, 64 bits as 16 hex characters), in two modes.

**exact** returns what ``str(imagehash.phash(Image.open(BytesIO(data))))`` returns, bit for bit: the
same Pillow decode and ``convert("L")``, then the 32x32 LANCZOS resize, the DCT and the median, done
faster but to the same result:

- the resize is Pillow's own two-pass algorithm (Resample.c: coefficients, 22-bit fixed point,
  rounding, clipping, and Pillow 13's choice of which pass runs first), computed as matrix products
  that are exact: float32 products of integers split into a high and a low part, each of whose partial
  sums stays below 2**24. It is checked against Pillow on every size class in the tests;
- the DCT is two products with the 8x32 slice of the DCT-II matrix (all 32 outputs are never needed);
- where a coefficient lies within ``TIE_TOLERANCE`` of the median (uniform images: their AC terms are
  rounding noise), the bits depend on that noise, so those images are recomputed with
  ``scipy.fftpack.dct`` exactly as imagehash does.

**fast** lets libjpeg decode a JPEG at 1/2..1/8 scale straight to grayscale (``Image.draft``, the
luma plane without chroma) and resizes the decoded extent (not libjpeg's padding to whole blocks, which
would shift the image) with Pillow's LANCZOS; other formats take the exact path, whose cost is their
decoding. Its hash may differ from exact by a few bits: bench/phash.py measures the distribution
(<= 2 bits on 99.2 % of 2,000 photo-like JPEGs).

The **robust dedup key** (``keys_many``, issue 10; see the section at the end) comes from the same decode:
EXIF-upright, alpha composited on white, invariant to the 8 rotations/flips, and None for blank images;
with it the keys of crop windows, optionally aspect windows and the key of the picture inside letterbox /
pillarbox bars (issue 19). ``image_phash`` stays imagehash's.

Every public entry point holds BLAS to one thread while it runs (``one_blas_thread``, threadpoolctl):
the small matrix products gain nothing from BLAS threads, which fight over the cores when several
processes hash at once.

Both modes work on batches (``phash_many``): decoding is per image, the DCT, median and hex encoding
are vectorised over the batch. Decoding bounds the speed of either mode: Pillow's full decode plus
``convert("L")`` takes ~57 % of imagehash's time on 400-1600 px JPEGs, libjpeg's 1/8-scale decode
(entropy decoding of every coefficient stays) ~29 %.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import ParamSpec, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

HASH_SIZE = 8  # 8x8 low frequencies -> 64 bits
IMG_SIZE = 32  # hash_size * highfreq_factor (imagehash's defaults)
PRECISION_BITS = 22  # Pillow's fixed point for 8-bit resampling: 32 - 8 - 2
LANCZOS_SUPPORT = 3.0
TIE_TOLERANCE = 1e-6  # |coefficient - median| under this: recompute with scipy (see module doc)
FAST_DRAFT_SIZE = (64, 64)  # JPEG draft target in fast mode: decoded at the largest 1/2^n scale >= this

# What Pillow raises on bytes it cannot decode (formats disagree: truncated, corrupt, bombs, ...).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    Image.DecompressionBombError,
)


class PhashMode(StrEnum):
    EXACT = "exact"
    FAST = "fast"


class UndecodableImage(ValueError):
    """The bytes are not an image Pillow can decode; the message says why."""


@dataclass(frozen=True)
class HashResult:
    phash: str | None  # 16 hex characters, or None when the image could not be decoded
    error: str | None = None


# --- hex <-> integers ------------------------------------------------------------------------


def hex_to_int64(h: str) -> int:
    """A 16-hex pHash as a signed 64-bit integer (Spark's LongType), bit pattern unchanged."""
    if len(h) != 16:
        raise ValueError(f"a pHash is 16 hex characters, got {h!r}")
    v = int(h, 16)
    return v - (1 << 64) if v >= 1 << 63 else v


def int64_to_hex(v: int) -> str:
    return f"{v & 0xFFFFFFFFFFFFFFFF:016x}"


def hamming(a: str | int, b: str | int) -> int:
    """Bits that differ between two hashes (hex strings or 64-bit integers)."""
    ia = int(a, 16) if isinstance(a, str) else a & 0xFFFFFFFFFFFFFFFF
    ib = int(b, 16) if isinstance(b, str) else b & 0xFFFFFFFFFFFFFFFF
    return (ia ^ ib).bit_count()


# --- Pillow's LANCZOS resize, reproduced exactly -----------------------------------------------


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -3.0 <= x < 3.0:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


def _column_weights_exact(in_size: int, center: float, xmin: int, xmax: int, scale_inv: float) -> list[int]:
    """One output pixel's fixed-point weights, with Pillow's double arithmetic in Pillow's order."""
    ws = [_lanczos((x + xmin - center + 0.5) * scale_inv) for x in range(xmax)]
    ww = 0.0
    for w in ws:
        ww += w
    out = []
    for w in ws:
        if ww != 0.0:
            w = w / ww
        out.append(int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS)))
    return out


def _sinc_array(x: np.ndarray) -> np.ndarray:
    px = x * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(px) / px)


@lru_cache(maxsize=4096)
def resample_weights(in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point LANCZOS weights for ``in_size`` -> 32 (precompute_coeffs +
    normalize_coeffs_8bpc): ``(first input index, (32, taps) int64 weights)`` per output pixel.

    Computed with numpy; an output pixel where a weight's fixed-point rounding lies within 1e-6 of a
    tie (where a last-bit difference between numpy's and libm's sin could tip it) is recomputed with
    math.sin in Pillow's exact order of operations."""
    scale = float(in_size) / IMG_SIZE
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    scale_inv = 1.0 / filterscale
    centers = (np.arange(IMG_SIZE) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    taps = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - xmin
    ksize = int(taps.max())
    index = np.arange(ksize)[None, :]
    x = ((index + xmin[:, None]) - centers[:, None] + 0.5) * scale_inv
    inside = (index < taps[:, None]) & (x >= -3.0) & (x < 3.0)
    w = np.where(inside, _sinc_array(x) * _sinc_array(x / 3), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = w * (1 << PRECISION_BITS) + np.where(w < 0, -0.5, 0.5)
    weights = np.where(index < taps[:, None], np.trunc(fixed), 0).astype(np.int64)
    for row in np.flatnonzero((np.abs(fixed - np.round(fixed)) < 1e-6).any(axis=1)):
        exact = _column_weights_exact(in_size, centers[row], int(xmin[row]), int(taps[row]), scale_inv)
        weights[row, : len(exact)] = exact
    return xmin, weights


@dataclass(frozen=True)
class _BandedWeights:
    """The weights for BLAS, in blocks of ``BAND_OUTPUTS`` consecutive output pixels, each block
    holding only the input span those outputs read (a dense matrix would be ~85 % zeros).

    Preferably float32 with each weight split as ``high * 2**shift + low``: the shift is chosen so that
    every partial sum of 255 * |high| and of 255 * low stays below 2**24, which makes float32 products
    and sums of these integers exact; a block is then (span, 2 * BAND_OUTPUTS): [high | low]. Where no
    shift does that (inputs over ~2,700 px), float64 blocks (span, BAND_OUTPUTS), exact below 2**53,
    and shift None."""

    spans: tuple[tuple[int, int], ...]
    blocks: tuple[np.ndarray, ...]
    shift: int | None


BAND_OUTPUTS = 8


@lru_cache(maxsize=1024)  # ~130 KB per entry at 1,152 px: the sizes one run meets (384 x <=1152) fit
def _banded_weights(in_size: int) -> _BandedWeights:
    xmin, weights = resample_weights(in_size)
    taps = (weights != 0).sum(axis=1)
    ends = np.minimum(xmin + weights.shape[1], in_size)
    limit = (1 << 24) / 255
    abs_sum = float(np.abs(weights).sum(axis=1).max())
    most = int(taps.max())
    shift = next((s for s in range(PRECISION_BITS) if abs_sum / (1 << s) + most < limit), None)  # |w >> s| <= |w|/2**s + 1
    if shift is not None and most * ((1 << shift) - 1) >= limit:
        shift = None
    spans, blocks = [], []
    for first in range(0, IMG_SIZE, BAND_OUTPUTS):
        outs = range(first, first + BAND_OUTPUTS)
        lo, hi = int(xmin[first]), int(max(ends[j] for j in outs))
        block = np.zeros((hi - lo, BAND_OUTPUTS), np.int64)
        for j in outs:
            n = int(ends[j] - xmin[j])
            block[xmin[j] - lo : xmin[j] - lo + n, j - first] = weights[j, :n]
        if shift is None:
            blocks.append(block.astype(np.float64))
        else:
            blocks.append(np.concatenate([block >> shift, block & ((1 << shift) - 1)], axis=1).astype(np.float32))
        spans.append((lo, hi))
    return _BandedWeights(tuple(spans), tuple(blocks), shift)


def _fixed_point_to_pixels(high: np.ndarray, low: np.ndarray | None, shift: int | None) -> np.ndarray:
    """Recombine the halves (exact in float64), then Pillow's clip8: (sum + 2**21) >> 22, 0..255."""
    acc = high if shift is None else high.astype(np.float64) * (1 << shift) + low
    return np.clip(np.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)), 0, 255)


def _resample_rows(pixels: np.ndarray) -> np.ndarray:
    """Horizontal pass: (rows, in) -> (rows, 32)."""
    bands = _banded_weights(pixels.shape[1])
    x = pixels.astype(np.float64 if bands.shift is None else np.float32)
    parts = [x[:, lo:hi] @ block for (lo, hi), block in zip(bands.spans, bands.blocks)]
    if bands.shift is None:
        return _fixed_point_to_pixels(np.concatenate(parts, axis=1), None, None)
    high = np.concatenate([p[:, :BAND_OUTPUTS] for p in parts], axis=1)
    low = np.concatenate([p[:, BAND_OUTPUTS:] for p in parts], axis=1)
    return _fixed_point_to_pixels(high, low, bands.shift)


def _resample_columns(pixels: np.ndarray) -> np.ndarray:
    """Vertical pass: (in, cols) -> (32, cols), without transposing the large input."""
    bands = _banded_weights(pixels.shape[0])
    x = pixels.astype(np.float64 if bands.shift is None else np.float32)
    parts = [block.T @ x[lo:hi] for (lo, hi), block in zip(bands.spans, bands.blocks)]
    if bands.shift is None:
        return _fixed_point_to_pixels(np.concatenate(parts, axis=0), None, None)
    high = np.concatenate([p[:BAND_OUTPUTS] for p in parts], axis=0)
    low = np.concatenate([p[BAND_OUTPUTS:] for p in parts], axis=0)
    return _fixed_point_to_pixels(high, low, bands.shift)


def resize_gray_32(gray: np.ndarray) -> np.ndarray:
    """``Image.fromarray(gray, "L").resize((32, 32), Image.Resampling.LANCZOS)`` as a uint8 array,
    bit for bit (Pillow 13: the vertical pass runs first when the height shrinks by more than twice
    as many pixels as the width)."""
    height, width = gray.shape
    vertical_first = height >= IMG_SIZE and (height - IMG_SIZE) > (width - IMG_SIZE) * 2
    out = gray
    for axis in ("v", "h") if vertical_first else ("h", "v"):
        if axis == "h" and width != IMG_SIZE:
            out = _resample_rows(out)
        elif axis == "v" and height != IMG_SIZE:
            out = _resample_columns(out)
    return np.ascontiguousarray(out, dtype=np.uint8)


# --- the DCT, median and bits, vectorised over a batch -------------------------------------------


def _dct_matrix(n: int = IMG_SIZE) -> np.ndarray:
    """scipy.fftpack.dct's type-II, unnormalised: y[k] = 2 * sum_n x[n] cos(pi k (2n + 1) / 2N)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT_LOW = np.ascontiguousarray(_dct_matrix()[:HASH_SIZE])  # (8, 32)


def _bits_reference(pixels: np.ndarray) -> np.ndarray:
    """imagehash.phash's own arithmetic on 32x32 uint8 pixels (scipy.fftpack, numpy.median)."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return (low > np.median(low)).reshape(-1)


def hashes_from_pixels(pixels: np.ndarray) -> list[str]:
    """pHashes of a (N, 32, 32) uint8 batch of grayscale thumbnails."""
    if pixels.shape[0] == 0:
        return []
    low = _DCT_LOW @ pixels.astype(np.float64) @ _DCT_LOW.T  # (N, 8, 8)
    flat = low.reshape(len(pixels), -1)
    median = np.median(flat, axis=1, keepdims=True)
    bits = flat > median
    near_tie = np.abs(flat - median).min(axis=1) < TIE_TOLERANCE
    for i in np.flatnonzero(near_tie):
        bits[i] = _bits_reference(pixels[i])
    packed = np.packbits(bits, axis=1)  # first bit = most significant, as imagehash's hex
    return [row.tobytes().hex() for row in packed]


# --- decoding ----------------------------------------------------------------------------------


def open_image(data: bytes) -> Image.Image:
    if not data:
        raise UndecodableImage("empty image bytes")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:  # its message names a memory address: keep details deterministic
        raise UndecodableImage(f"not an image format Pillow knows ({len(data)} bytes)") from e
    except DECODE_ERRORS as e:
        raise UndecodableImage(f"cannot open image: {type(e).__name__}: {e}") from e


def thumbnail_exact(image: Image.Image) -> np.ndarray:
    """The 32x32 grayscale pixels imagehash.phash hashes: ``convert("L")`` then LANCZOS."""
    gray = np.asarray(image.convert("L"))
    return resize_gray_32(gray)


def thumbnail_fast(image: Image.Image) -> np.ndarray:
    """A close approximation for JPEGs: decoded at reduced scale to grayscale, then LANCZOS."""
    if image.format != "JPEG":
        return thumbnail_exact(image)  # decoding dominates; the exact resize is already the fast part
    drafted = image.draft("L", FAST_DRAFT_SIZE)
    # the decoded size is rounded up to whole 1/scale blocks: resize the original extent, not the padding
    box = drafted[1] if drafted else None
    small = image.convert("L").resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS, box=box)
    return np.asarray(small)


def _thumbnail(data: bytes | None, mode: PhashMode) -> np.ndarray:
    if data is None:
        raise UndecodableImage("no image bytes")
    image = open_image(data)
    try:
        return thumbnail_fast(image) if mode == PhashMode.FAST else thumbnail_exact(image)
    except DECODE_ERRORS as e:
        raise UndecodableImage(f"cannot decode image: {type(e).__name__}: {e}") from e


# --- one BLAS thread ----------------------------------------------------------------------------
#
# The resize and DCT are many small matrix products. Multi-threaded BLAS gains nothing on them and, with
# several processes hashing at once (Spark's Python workers, any multi-process caller), its threads
# fight over the cores: 4x slower than imagehash on real photos of many sizes with two processes on two
# cores, against 1.3x faster with one BLAS thread (bench/phash.py --processes 2). Spark sets
# OMP_NUM_THREADS=1 for its workers, library callers do not: so every public entry point holds BLAS to
# one thread itself (threadpoolctl; the caller's setting is restored on return).

_P = ParamSpec("_P")
_R = TypeVar("_R")


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController  # numpy's BLAS is loaded by now (imported above)

    return ThreadpoolController()


def one_blas_thread(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with BLAS held to one thread (~55 us per call with the cached controller)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _blas_controller().limit(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


# --- public entry points -----------------------------------------------------------------------


@one_blas_thread
def phash_many(items: Iterable[bytes | None], mode: PhashMode | str = PhashMode.EXACT) -> list[HashResult]:
    """Hash a batch of encoded images; an undecodable one gives ``HashResult(None, error)``."""
    mode = PhashMode(mode)
    thumbs: list[np.ndarray] = []
    results: list[HashResult | None] = []
    for data in items:
        try:
            thumbs.append(_thumbnail(data, mode))
            results.append(None)
        except UndecodableImage as e:
            results.append(HashResult(None, str(e)))
    hashes = iter(hashes_from_pixels(np.stack(thumbs) if thumbs else np.zeros((0, IMG_SIZE, IMG_SIZE), np.uint8)))
    return [r if r is not None else HashResult(next(hashes)) for r in results]


def phash(data: bytes, mode: PhashMode | str = PhashMode.EXACT) -> str:
    """pHash of one encoded image as 16 hex characters; raises UndecodableImage."""
    result = phash_many([data], mode)[0]
    if result.phash is None:
        raise UndecodableImage(result.error)
    return result.phash


@one_blas_thread
def phash_image(image: Image.Image) -> str:
    """Exact pHash of an already opened Pillow image (``str(imagehash.phash(image))``)."""
    return hashes_from_pixels(thumbnail_exact(image)[None])[0]


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
_SIGNS = (np.arange(HASH_SIZE) % 2 == 0).astype(np.float64) * 2 - 1  # (+1, -1, +1, ...)
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


def dihedral_hashes(pixels: np.ndarray) -> np.ndarray:
    """(N, 8) uint64: the pHash bits of each of the 8 rotations/flips of a (N, 32, 32) batch, from one
    DCT per image. Column 0 is the image as given (its bits equal hashes_from_pixels' away from ties)."""
    n = pixels.shape[0]
    low = _DCT_LOW @ pixels.astype(np.float64) @ _DCT_LOW.T  # (N, 8, 8)
    both = np.stack([low, np.swapaxes(low, 1, 2)], axis=1)  # (N, 2, 8, 8)
    rows = [1.0, _SIGNS]
    variants = np.stack(
        [both * np.asarray(r).reshape(-1, 1) * np.asarray(c).reshape(1, -1) for r in rows for c in rows], axis=2
    ).reshape(n, 8, HASH_SIZE * HASH_SIZE)
    bits = variants > np.median(variants, axis=2, keepdims=True)
    packed = np.packbits(bits, axis=2)  # (N, 8, 8) bytes, big-endian
    return packed.reshape(n * 8, 8).view(">u8").astype(np.uint64).reshape(n, 8)


def canonical_block(low: np.ndarray) -> np.ndarray:
    """(N, 8, 8) low DCT blocks brought to one orientation, the same for all 8 rotations/flips of an
    image: transposed when the energy below the diagonal (vertical frequencies) exceeds the energy
    above it, then columns mirrored when the horizontal gradient C[0,1] + C[0,3]/3 is negative, rows
    when the vertical one C[1,0] + C[3,0]/3 is. (The minimum over the 8 variants' hashes would also be
    invariant, but which variant is smallest flips under small edits: recall 0.78 against 0.92 at k = 4
    on bench/neardup_quality.py's set.)"""
    low = np.array(low, np.float64, copy=True)
    upper = np.triu(np.ones((HASH_SIZE, HASH_SIZE), bool), 1)
    vertical = (low**2)[:, upper.T].sum(axis=1) > (low**2)[:, upper].sum(axis=1)
    low[vertical] = np.swapaxes(low[vertical], 1, 2)
    mirror = (low[:, 0, 1] + low[:, 0, 3] / 3) < 0
    flip = (low[:, 1, 0] + low[:, 3, 0] / 3) < 0
    low[mirror] *= _SIGNS[None, :]
    low[flip] *= _SIGNS[:, None]
    return low


def _block_keys(low: np.ndarray) -> list[str]:
    """16-hex keys of (N, 8, 8) low DCT blocks: the canonical block's bits above its own median."""
    flat = canonical_block(low).reshape(len(low), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return [row.tobytes().hex() for row in np.packbits(bits, axis=1)]


def robust_keys_from_pixels(pixels: np.ndarray) -> list[str]:
    """The dihedral-invariant keys (16 hex) of a (N, 32, 32) batch: the pHash bits of the canonical
    block, each thresholded at its own median."""
    if pixels.shape[0] == 0:
        return []
    return _block_keys(_DCT_LOW @ pixels.astype(np.float64) @ _DCT_LOW.T)


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


def _window_axis(start: float, length: float, n: int = IMG_SIZE) -> np.ndarray:
    """(n, n) matrix sampling the window [start, start + length) of an n-pixel axis at n pixel
    centres, by linear interpolation."""
    centres = np.clip(start + (np.arange(n) + 0.5) * length / n - 0.5, 0, n - 1)
    lower = np.floor(centres).astype(int)
    frac = centres - lower
    matrix = np.zeros((n, n))
    matrix[np.arange(n), lower] += 1 - frac
    matrix[np.arange(n), np.minimum(lower + 1, n - 1)] += frac
    return matrix


def _window_matrices() -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) (8, 32) matrices per window: low block of a window = R @ pixels @ C.T."""
    out = []
    for scale in WINDOW_SCALES:
        length = IMG_SIZE * scale
        far, mid = IMG_SIZE - length, (IMG_SIZE - length) / 2
        for place in WINDOW_PLACES:
            r0 = mid if place == "centre" else (0.0 if place.startswith("top") else far)
            c0 = mid if place == "centre" else (0.0 if place.endswith("left") else far)
            out.append((_DCT_LOW @ _window_axis(r0, length), _DCT_LOW @ _window_axis(c0, length)))
    return out


_WINDOWS = _window_matrices()


# Aspect windows (issue 19, ``aspect=True``): windows that keep one axis whole and take ASPECT_LENGTHS of
# the other, at its start, centre or end: a copy cut by a strip on one side, or cropped to another aspect
# ratio and resized, is the original's matching aspect window. 2 axes x 6 lengths x 3 places = 36 more
# window keys, closed under the 8 rotations/flips like the crop windows.
ASPECT_LENGTHS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
ASPECT_PLACES = ("start", "centre", "end")


def _aspect_matrices() -> list[tuple[np.ndarray, np.ndarray]]:
    whole = _DCT_LOW @ _window_axis(0.0, float(IMG_SIZE))
    out = []
    for axis in ("rows", "cols"):
        for scale in ASPECT_LENGTHS:
            length = IMG_SIZE * scale
            for place in ASPECT_PLACES:
                start = {"start": 0.0, "centre": (IMG_SIZE - length) / 2, "end": IMG_SIZE - length}[place]
                part = _DCT_LOW @ _window_axis(start, length)
                out.append((part, whole) if axis == "rows" else (whole, part))
    return out


_ASPECT_WINDOWS = _aspect_matrices()


def window_keys_from_pixels(pixels: np.ndarray, aspect: bool = False) -> list[tuple[str, ...]]:
    """Per image of a (N, 32, 32) batch, the keys of its len(WINDOW_SCALES) * 5 crop windows (and, with
    ``aspect``, then those of its 36 aspect windows)."""
    if pixels.shape[0] == 0:
        return []
    p = pixels.astype(np.float64)
    per_window = [_block_keys(rows @ p @ cols.T) for rows, cols in _WINDOWS + (_ASPECT_WINDOWS if aspect else [])]
    return [tuple(keys) for keys in zip(*per_window)]


# Border trimming (issue 19, ``trim=True``): letterbox / pillarbox bars (flat black, white or any flat
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


def _composited(image: Image.Image) -> tuple[np.ndarray, float]:
    """32x32 grayscale of the image composited on KEY_BACKGROUND, and the fraction of visible pixels."""
    rgba = image.convert("LA") if image.mode in ("LA", "La") else image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), np.float64) / 255.0
    gray = np.asarray(rgba.convert("RGB").convert("L") if rgba.mode == "RGBA" else rgba.getchannel("L"), np.float64)
    flat = np.rint(gray * alpha + KEY_BACKGROUND * (1.0 - alpha)).astype(np.uint8)
    return resize_gray_32(flat), float((alpha > 0).mean())


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except DECODE_ERRORS:
        return 1


def key_thumbnail(image: Image.Image, phash_thumb: np.ndarray) -> tuple[np.ndarray, float]:
    """The dedup key's 32x32 thumbnail (upright, composited) and the visible fraction; images without
    alpha reuse the pHash thumbnail (no second decode or resize)."""
    thumb, visible = _composited(image) if _has_alpha(image) else (phash_thumb, 1.0)
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
) -> list[KeyResult]:
    """pHash (as phash_many) and the robust dedup key of each encoded image, from one decode each; the
    window keys are the crop windows' (and the aspect windows' with ``aspect_windows``; and, with
    ``trim_borders``, the key of the picture inside letterbox / pillarbox bars when it has some)."""
    mode = PhashMode(mode)
    thumbs, key_thumbs, blanks, trimmed = [], [], [], []
    results: list[KeyResult | None] = []
    for data in items:
        try:
            if data is None:
                raise UndecodableImage("no image bytes")
            image = open_image(data)
            try:
                trim = None
                if mode == PhashMode.FAST:
                    thumb = thumbnail_fast(image)
                    if trim_borders and not _has_alpha(image):
                        trim = trimmed_thumbnail(np.asarray(image.convert("L")))
                else:
                    gray = np.asarray(image.convert("L"))
                    thumb = resize_gray_32(gray)
                    if trim_borders and not _has_alpha(image):
                        trim = trimmed_thumbnail(gray)
                kthumb, visible = key_thumbnail(image, thumb)
                if trim is not None:
                    upright = _UPRIGHT.get(_orientation(image))  # (the key is dihedral-invariant: for symmetry only)
                    trim = np.ascontiguousarray(upright(trim)) if upright else trim
            except DECODE_ERRORS as e:
                raise UndecodableImage(f"cannot decode image: {type(e).__name__}: {e}") from e
        except UndecodableImage as e:
            results.append(KeyResult(None, error=str(e)))
            continue
        thumbs.append(thumb)
        key_thumbs.append(kthumb)
        blanks.append(blank_reason(kthumb, visible, blank_std, blank_min_alpha))
        trimmed.append(trim)
        results.append(None)
    empty = np.zeros((0, IMG_SIZE, IMG_SIZE), np.uint8)
    hashes = iter(hashes_from_pixels(np.stack(thumbs) if thumbs else empty))
    stacked = np.stack(key_thumbs) if key_thumbs else empty
    keys, windows = iter(robust_keys_from_pixels(stacked)), iter(window_keys_from_pixels(stacked, aspect_windows))
    with_bars = [t for t in trimmed if t is not None]
    trim_keys = iter(robust_keys_from_pixels(np.stack(with_bars)) if with_bars else [])
    blank, trims = iter(blanks), iter(trimmed)
    out = []
    for r in results:
        if r is not None:
            out.append(r)
            continue
        h, k, w, b, t = next(hashes), next(keys), next(windows), next(blank), next(trims)
        if t is not None:
            w = (*w, next(trim_keys))
        out.append(KeyResult(h, None, b) if b else KeyResult(h, k, None, windows=w))
    return out


def robust_key(data: bytes, mode: PhashMode | str = PhashMode.EXACT) -> str | None:
    """The robust dedup key of one encoded image (None when blank); raises UndecodableImage."""
    r = keys_many([data], mode)[0]
    if r.phash is None:
        raise UndecodableImage(r.error)
    return r.key
