"""Encodings the dedup steps compare: 16-hex pHashes as int64 bit patterns, their distance, the text key."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa

def text_key(text: str | None) -> str:
    """Text as compared for (pHash, text) duplicates: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())

def phash_to_int64(hashes: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """16-hex pHashes -> int64 bit patterns (vectorised); a value that is not 16 hex digits raises."""
    values = hashes.to_pylist() if isinstance(hashes, (pa.Array, pa.ChunkedArray)) else list(hashes)
    bad = next((h for h in values if not isinstance(h, str) or len(h) != 16), None)
    if bad is not None:
        raise ValueError(f"not a 16-hex pHash: {bad!r}")
    try:
        raw = bytes.fromhex("".join(values))
    except ValueError as e:
        raise ValueError(f"not a 16-hex pHash among {len(values)} values: {e}") from e
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).view(np.int64)

def int64_to_phash(values: np.ndarray) -> list[str]:
    return [f"{v:016x}" for v in np.asarray(values, np.int64).view(np.uint64).tolist()]

def popcount_xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a.view(np.uint64), b.view(np.uint64))).astype(np.int32)
