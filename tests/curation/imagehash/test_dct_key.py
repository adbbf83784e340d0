"""The shared block key (curation/imagehash/dct_key.py): the batched, vectorised code gives the keys of the plain
per-window code it replaced, bit for bit, on random blocks (with ties) and real photos' windows."""

from __future__ import annotations

import numpy as np

from curation.imagehash.dct_key import block_keys, canonical_block, window_keys
from curation.imagehash import resize_gray_32, window_keys_from_pixels
from curation.imagehash.perceptual import HASH_SIZE
from curation.imagehash.robust import _ASPECT_WINDOWS, _WINDOWS
from tests.conftest import photo_image


def _canonical_reference(low):
    low = np.array(low, np.float64, copy=True)
    upper = np.triu(np.ones((HASH_SIZE, HASH_SIZE), bool), 1)
    vertical = (low**2)[:, upper.T].sum(axis=1) > (low**2)[:, upper].sum(axis=1)
    low[vertical] = np.swapaxes(low[vertical], 1, 2)
    signs = (np.arange(HASH_SIZE) % 2 == 0).astype(np.float64) * 2 - 1
    mirror = (low[:, 0, 1] + low[:, 0, 3] / 3) < 0
    flip = (low[:, 1, 0] + low[:, 3, 0] / 3) < 0
    low[mirror] *= signs[None, :]
    low[flip] *= signs[:, None]
    return low


def _block_keys_reference(low):
    flat = _canonical_reference(low).reshape(len(low), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return [row.tobytes().hex() for row in np.packbits(bits, axis=1)]


def _blocks():
    rng = np.random.default_rng(0)
    return [
        rng.normal(size=(3000, 8, 8)),
        rng.integers(-2, 3, (3000, 8, 8)).astype(np.float64),  # ties everywhere: median, energies, gradients
        np.round(rng.normal(size=(3000, 8, 8)), 1),
        np.zeros((2, 8, 8)),
    ]


def test_canonical_block_and_block_keys_equal_the_reference():
    for low in _blocks():
        assert np.array_equal(canonical_block(low), _canonical_reference(low))
        assert block_keys(low) == _block_keys_reference(low)
    assert block_keys(np.zeros((0, 8, 8))) == []


def test_batched_window_keys_equal_one_block_keys_call_per_window():
    rng = np.random.default_rng(1)
    photos = np.stack([resize_gray_32(np.asarray(photo_image(i).convert("L"))) for i in range(4)])
    pixels = np.concatenate([photos, rng.integers(0, 256, (300, 32, 32), np.uint8)])
    for aspect in (False, True):
        windows = _WINDOWS + (_ASPECT_WINDOWS if aspect else [])
        p = pixels.astype(np.float64)
        expected = [tuple(keys) for keys in zip(*[_block_keys_reference(r @ p @ c.T) for r, c in windows])]
        assert window_keys_from_pixels(pixels, aspect) == expected
    rows, cols = np.stack([r for r, _ in _WINDOWS]), np.stack([c for _, c in _WINDOWS])
    assert window_keys(pixels, rows, cols, chunk=7) == window_keys(pixels, rows, cols)
    assert window_keys_from_pixels(np.zeros((0, 32, 32), np.uint8)) == []
