"""The canonical (dihedral-invariant) block key shared by the robust dedup key (curation.robust_key)
and the extra window keys of issue 19 (curation.hash_windows): the 8x8 low DCT block brought to one
orientation among its 8 rotations/flips, thresholded at its own median. See curation.robust_key's
comments for why.
"""

from __future__ import annotations

import numpy as np

from curation.phash import DCT_LOW, HASH_SIZE, IMG_SIZE

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


def block_keys(low: np.ndarray) -> list[str]:
    """16-hex keys of (N, 8, 8) low DCT blocks: the canonical block's bits above its own median."""
    flat = canonical_block(low).reshape(len(low), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return [row.tobytes().hex() for row in np.packbits(bits, axis=1)]


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
