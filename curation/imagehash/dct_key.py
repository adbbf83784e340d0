"""The canonical (dihedral-invariant) block key shared by the robust dedup key (curation.imagehash.robust)
and the extra window keys of curation.imagehash.windows (rotated, deep aspect, occlusion): the 8x8 low
DCT block brought to one orientation among its 8 rotations/flips, thresholded at its own median. See
curation.imagehash.robust's comments for why.
"""

from __future__ import annotations

import numpy as np

from curation.imagehash.perceptual import DCT_LOW, HASH_SIZE, IMG_SIZE

_SIGNS = (np.arange(HASH_SIZE) % 2 == 0).astype(np.float64) * 2 - 1  # (+1, -1, +1, ...)


def dihedral_hashes(pixels: np.ndarray) -> np.ndarray:
    """(N, 8) uint64: the pHash bits of each of the 8 rotations/flips of a (N, 32, 32) batch, from one
    DCT per image. Column 0 is the image as given (its bits equal hashes_from_pixels' away from ties)."""
    n = pixels.shape[0]
    low = DCT_LOW @ pixels.astype(np.float64) @ DCT_LOW.T  # (N, 8, 8)
    both = np.stack([low, np.swapaxes(low, 1, 2)], axis=1)  # (N, 2, 8, 8)
    rows = [1.0, _SIGNS]
    variants = np.stack(
        [both * np.asarray(r).reshape(-1, 1) * np.asarray(c).reshape(1, -1) for r in rows for c in rows], axis=2
    ).reshape(n, 8, HASH_SIZE * HASH_SIZE)
    bits = variants > np.median(variants, axis=2, keepdims=True)
    packed = np.packbits(bits, axis=2)  # (N, 8, 8) bytes, big-endian
    return packed.reshape(n * 8, 8).view(">u8").astype(np.uint64).reshape(n, 8)


_UPPER = np.triu(np.ones((HASH_SIZE, HASH_SIZE), bool), 1)
_ABOVE, _BELOW = np.flatnonzero(_UPPER), np.flatnonzero(_UPPER.T)  # positions in a flattened block, row-major


def canonical_block(low: np.ndarray) -> np.ndarray:
    """(N, 8, 8) low DCT blocks brought to one orientation, the same for all 8 rotations/flips of an
    image: transposed when the energy below the diagonal (vertical frequencies) exceeds the energy
    above it, then columns mirrored when the horizontal gradient C[0,1] + C[0,3]/3 is negative, rows
    when the vertical one C[1,0] + C[3,0]/3 is. (The minimum over the 8 variants' hashes would also be
    invariant, but which variant is smallest flips under small edits: recall 0.78 against 0.92 at k = 4
    on bench/neardup_quality.py's set.)"""
    low = np.asarray(low, np.float64)
    square = (low**2).reshape(len(low), HASH_SIZE * HASH_SIZE)
    vertical = square[:, _BELOW].sum(axis=1) > square[:, _ABOVE].sum(axis=1)
    low = np.where(vertical[:, None, None], np.swapaxes(low, 1, 2), low)
    mirror = (low[:, 0, 1] + low[:, 0, 3] / 3) < 0
    flip = (low[:, 1, 0] + low[:, 3, 0] / 3) < 0
    rows, cols = np.where(flip[:, None], _SIGNS, 1.0), np.where(mirror[:, None], _SIGNS, 1.0)  # sign changes: exact
    return low * rows[:, :, None] * cols[:, None, :]


def block_keys(low: np.ndarray) -> list[str]:
    """16-hex keys of (N, 8, 8) low DCT blocks: the canonical block's bits above its own median (the
    mean of its two middle values, as np.median)."""
    flat = canonical_block(low).reshape(len(low), HASH_SIZE * HASH_SIZE)
    ordered = np.sort(flat, axis=1)
    middle = flat.shape[1] // 2
    median = (ordered[:, middle - 1 : middle] + ordered[:, middle : middle + 1]) / 2
    text = np.packbits(flat > median, axis=1).tobytes().hex()
    width = flat.shape[1] // 4
    return [text[i : i + width] for i in range(0, len(text), width)]


def window_keys(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray, chunk: int = 256) -> list[tuple[str, ...]]:
    """Per (32, 32) image of ``pixels``, the keys of its W windows whose (W, 8, 32) row and column
    matrices give each window's low DCT block directly (low = rows[w] @ image @ cols[w].T)."""
    p = np.asarray(pixels, np.float64)
    w = len(rows)
    out: list[tuple[str, ...]] = []
    for start in range(0, len(p), chunk):
        part = p[start : start + chunk]
        low = rows[None] @ part[:, None] @ np.swapaxes(cols, 1, 2)[None]  # (n, W, 8, 8)
        keys = block_keys(low.reshape(-1, HASH_SIZE, HASH_SIZE))
        out += [tuple(keys[i : i + w]) for i in range(0, len(keys), w)]
    return out


def robust_keys_from_pixels(pixels: np.ndarray) -> list[str]:
    """The dihedral-invariant keys (16 hex) of a (N, 32, 32) batch: the pHash bits of the canonical
    block, each thresholded at its own median."""
    if pixels.shape[0] == 0:
        return []
    return block_keys(DCT_LOW @ pixels.astype(np.float64) @ DCT_LOW.T)


def window_axis(start: float, length: float, n: int = IMG_SIZE) -> np.ndarray:
    """(n, n) matrix sampling the window [start, start + length) of an n-pixel axis at n pixel
    centres, by linear interpolation."""
    centres = np.clip(start + (np.arange(n) + 0.5) * length / n - 0.5, 0, n - 1)
    lower = np.floor(centres).astype(int)
    frac = centres - lower
    matrix = np.zeros((n, n))
    matrix[np.arange(n), lower] += 1 - frac
    matrix[np.arange(n), np.minimum(lower + 1, n - 1)] += frac
    return matrix
