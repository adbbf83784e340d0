"""The banded cross join (filters/dedup/bands.py) against explicitly constructed pairs: with ``k + 1`` bands a pair
at distance ``k`` whose flipped bits fall in ``k`` different blocks shares exactly one table, so a (band, key) run
that the chunking skipped would lose it for good."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from filters.dedup.bands import blocklist_pairs, plan_bands

K = 4
# k + 1 = 5 blocks of 64 bits, low bits first: (shift, width)
BLOCKS = ((0, 13), (13, 13), (26, 13), (39, 13), (52, 12))


def _flip(hashes: np.ndarray, bits: list[int]) -> np.ndarray:
    mask = np.uint64(0)
    for bit in bits:
        mask |= np.uint64(1) << np.uint64(bit)
    return (np.asarray(hashes, np.int64).view(np.uint64) ^ mask).view(np.int64)


def _one_bit_in_each_block_but(equal_block: int, offset: int = 0) -> list[int]:
    return [shift + (offset % width) for b, (shift, width) in enumerate(BLOCKS) if b != equal_block]


def _pairs(table: pa.Table) -> set[tuple[int, int]]:
    return set(zip(table.column("a").to_pylist(), table.column("b").to_pylist()))


def test_k_plus_1_bands_split_64_bits_into_the_expected_blocks_one_per_table():
    plan = plan_bands(K, 100, 100, bands=K + 1)
    assert plan.blocks == BLOCKS
    assert plan.tables == ((0,), (1,), (2,), (3,), (4,))


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_cross_join_in_small_chunks_finds_every_pair_at_distance_exactly_k(chunk, monkeypatch):
    """Forty rows, each with a listed hash at distance exactly k (one bit in each block but one, the equal
    block rotating so the pairs fall in every table), a listed hash at distance k + 1 that still shares the
    equal block (two bits in one of the others), and unrelated listed hashes. A run holding a row's pairs has
    2 cross pairs: chunk 1 checks each such run a left row at a time, 3 and 7 several runs per chunk."""
    monkeypatch.setattr("filters.dedup.bands.CROSS_CHUNK", chunk)
    rng = np.random.default_rng(0)
    rows = rng.integers(-(2**63), 2**63 - 1, 40, dtype=np.int64)
    expected, listed = set(), []
    for i, row in enumerate(rows.tolist()):
        equal = i % len(BLOCKS)
        near = int(_flip(np.array([row]), _one_bit_in_each_block_but(equal, offset=i))[0])
        shift, width = BLOCKS[(equal + 1) % len(BLOCKS)]
        too_far = int(_flip(np.array([near]), [shift + (i + 6) % width])[0])  # a second bit in one block
        listed += [near, too_far]
        expected.add((row, near))
    listed += rng.integers(-(2**63), 2**63 - 1, 200, dtype=np.int64).tolist()
    found = blocklist_pairs(rows, np.array(listed, np.int64), K, bands=K + 1)
    assert _pairs(found) == expected
    assert set(found.column("distance").to_pylist()) == {K}


@pytest.mark.parametrize("chunk", [5, 12, 35])
def test_one_run_larger_than_a_chunk_is_checked_to_its_last_left_row(chunk, monkeypatch):
    """Six rows that share block 0, each with a listed hash at distance exactly k sharing block 0 only: one
    (band 0, key) run of 6 x 6 cross pairs, more than a chunk, checked a few left rows at a time."""
    monkeypatch.setattr("filters.dedup.bands.CROSS_CHUNK", chunk)
    rng = np.random.default_rng(1)
    rows = rng.integers(-(2**63), 2**63 - 1, 6, dtype=np.int64)
    rows = (rows.view(np.uint64) & ~np.uint64((1 << 13) - 1)).view(np.int64)  # block 0 all zeros: one key in table 0
    listed = np.concatenate([_flip(rows[i : i + 1], _one_bit_in_each_block_but(0, offset=i)) for i in range(6)])
    found = blocklist_pairs(rows, listed, K, bands=K + 1)
    assert _pairs(found) == set(zip(rows.tolist(), listed.tolist()))
    assert set(found.column("distance").to_pylist()) == {K}
