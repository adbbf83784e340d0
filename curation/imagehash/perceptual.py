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

The **robust dedup key** (``keys_many``) comes from the same decode and lives in
:mod:`curation.imagehash.robust`; :mod:`curation.imagehash` re-exports both. ``image_phash`` stays imagehash's.

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


DCT_LOW = np.ascontiguousarray(_dct_matrix()[:HASH_SIZE])  # (8, 32): the low rows of the 32-point DCT-II


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
    low = DCT_LOW @ pixels.astype(np.float64) @ DCT_LOW.T  # (N, 8, 8)
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
