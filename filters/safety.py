"""Safety hash lists: URL and image hashes from child-safety organisations, and PDQ lists, as pure lookups.

A list file holds one hex hash per line (``#`` starts a comment, blank lines are skipped). Its ``kind`` says
what the hashes are of:

- ``url_md5``, ``url_sha256``: the URL as written in the page (UTF-8), checked before any request is sent;
- ``image_md5``, ``image_sha1``, ``image_sha256``: the original bytes as fetched, checked as soon as the body
  has arrived, before it is decoded, resized or stored;
- ``pdq``: Meta's 256-bit PDQ perceptual hash (64 hex characters), matched within a Hamming ``distance``
  (default 31, as ThreatExchange's PDQ lists are used).

Exact lists are held as two sorted ``uint64`` arrays (the first 16 bytes of each digest, big-endian), 16 bytes
per entry whatever the digest's width, and looked up a batch at a time with ``np.searchsorted``. An MD5 is
matched on all its bits; a SHA-1 or SHA-256 on its first 128, where a chance collision with any of 10^7
entries has probability below 10^7 / 2^128 (~3e-32) per lookup. PDQ lists are held as four ``uint64`` words per
hash (32 bytes per entry) and matched by brute force over popcounts, a chunk of the list at a time (about
2 ms per row at 10^5 entries: fit for lists of that size, not for 10^7).

Nothing here reads files or knows the run: the stage layer (jobs/stages/safety.py) loads the lists through
curation/storage.py, once per process, and names the list in a rejection, never the URL or the hash.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

URL_KINDS = {"url_md5": "md5", "url_sha256": "sha256"}  # kind -> hashlib algorithm
IMAGE_KINDS = {"image_md5": "md5", "image_sha1": "sha1", "image_sha256": "sha256"}
PDQ = "pdq"
KINDS = (*URL_KINDS, *IMAGE_KINDS, PDQ)
DIGEST_BYTES = {"md5": 16, "sha1": 20, "sha256": 32}
PDQ_BYTES = 32
PDQ_DISTANCE = 31
PDQ_MAX_SIDE = 512  # the image is thumbnailed to this longer side before PDQ, as python-threatexchange does
PREFIX_BYTES = 16  # exact lists keep this much of each digest
_PDQ_CHUNK = 1 << 20  # list rows compared at once (bounds the temporary popcount arrays)


class HashListError(ValueError):
    """A list file that cannot be used: a line that is not a hex hash of the kind's width."""


@dataclass(frozen=True)
class SafetyList:
    """One ``[[safety.lists]]`` entry of the run config."""

    name: str  # named in rejection details and the report
    path: str  # local path or s3:// URI of the list file
    kind: str  # url_md5, url_sha256 (of the URL), image_md5, image_sha1, image_sha256 (of the bytes) or pdq
    distance: int = PDQ_DISTANCE  # pdq: largest Hamming distance that matches (of 256 bits)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"safety list {self.name!r}: kind {self.kind!r}; use one of {list(KINDS)}")
        if not self.name.strip() or not self.path.strip():
            raise ValueError("a safety list needs a name and a path")
        if not 0 <= self.distance <= 256:
            raise ValueError(f"safety list {self.name!r}: distance must be in 0..256")

    @property
    def width(self) -> int:
        """Bytes of one hash of this kind."""
        return PDQ_BYTES if self.kind == PDQ else DIGEST_BYTES[algorithm(self.kind)]

    @property
    def detail(self) -> str:
        """What a rejection by this list says: the list and its kind, never the URL or a hash."""
        return f"safety list {self.name} ({self.kind})"


@dataclass(frozen=True)
class SafetyOptions:
    """``[[safety.lists]]``: the lists the download stage applies (empty: none)."""

    lists: tuple[SafetyList, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.lists]
        if len(names) != len(set(names)):
            raise ValueError(f"safety list names must be unique, got {names}")

    def of_kinds(self, kinds) -> tuple[SafetyList, ...]:
        return tuple(s for s in self.lists if s.kind in kinds)

    def image_algorithms(self) -> tuple[str, ...]:
        """The hashlib algorithms the image lists need of every body."""
        return tuple(sorted({IMAGE_KINDS[s.kind] for s in self.of_kinds(IMAGE_KINDS)}))


def algorithm(kind: str) -> str:
    return {**URL_KINDS, **IMAGE_KINDS}[kind]


def parse_hashes(data: bytes, width: int) -> np.ndarray:
    """The hashes of a list file as an (n, width) uint8 array; HashListError names the first bad line
    by its number (never its content)."""
    lines = [line.split(b"#", 1)[0].strip() for line in data.splitlines()]
    kept = [line for line in lines if line]
    try:
        if all(len(line) == 2 * width for line in kept):
            raw = bytes.fromhex(b"".join(kept).decode("ascii"))
            return np.frombuffer(raw, np.uint8).reshape(len(kept), width)
    except (ValueError, UnicodeDecodeError):
        pass
    for number, line in enumerate(lines, 1):
        if line and (len(line) != 2 * width or not _is_hex(line)):
            raise HashListError(f"line {number} is not a hash of {width} bytes ({2 * width} hex characters)")
    raise AssertionError("unreachable")


def _is_hex(line: bytes) -> bool:
    try:
        bytes.fromhex(line.decode("ascii"))
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def _words(rows: np.ndarray) -> np.ndarray:
    """(n, 8k) uint8 -> (n, k) uint64, big-endian words (their order is the bytes' order)."""
    return np.ascontiguousarray(rows).view(">u8").astype(np.uint64)


class ExactSet:
    """A sorted array of 16-byte digest prefixes (two uint64 columns, 16 bytes per entry)."""

    def __init__(self, digests: np.ndarray) -> None:
        prefix = np.zeros((len(digests), PREFIX_BYTES), np.uint8)
        prefix[:, : min(PREFIX_BYTES, digests.shape[1])] = digests[:, :PREFIX_BYTES]
        words = _words(prefix)
        order = np.lexsort((words[:, 1], words[:, 0]))
        self.hi = np.ascontiguousarray(words[order, 0])
        self.lo = np.ascontiguousarray(words[order, 1])

    def __len__(self) -> int:
        return len(self.hi)

    @property
    def nbytes(self) -> int:
        return self.hi.nbytes + self.lo.nbytes

    def contains(self, digests: np.ndarray) -> np.ndarray:
        """A bool per row of ``digests`` ((n, width) uint8, width >= 8): is it on the list."""
        if len(self.hi) == 0 or len(digests) == 0:
            return np.zeros(len(digests), bool)
        prefix = np.zeros((len(digests), PREFIX_BYTES), np.uint8)
        prefix[:, : min(PREFIX_BYTES, digests.shape[1])] = digests[:, :PREFIX_BYTES]
        words = _words(prefix)
        q_hi, q_lo = words[:, 0], words[:, 1]
        # the queries in order: each binary search starts where the previous one ended (8x fewer cache misses at 10^7)
        order = np.argsort(q_hi, kind="stable")
        left = np.empty(len(q_hi), np.int64)
        left[order] = np.searchsorted(self.hi, q_hi[order], "left")
        at = np.minimum(left, len(self.hi) - 1)
        found = (self.hi[at] == q_hi) & (self.lo[at] == q_lo)
        # entries sharing their first 8 bytes (~n^2 / 2^65 of them): the rest of the run of equal hi
        for i in np.flatnonzero(~found & (self.hi[at] == q_hi)):
            right = np.searchsorted(self.hi, q_hi[i], "right")
            found[i] = bool(np.any(self.lo[left[i] : right] == q_lo[i]))
        return found


class PdqSet:
    """PDQ hashes as four uint64 words each (32 bytes per entry), matched within a Hamming distance."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.words = _words(hashes.reshape(-1, PDQ_BYTES)) if len(hashes) else np.zeros((0, 4), np.uint64)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def nbytes(self) -> int:
        return self.words.nbytes

    def nearest(self, hashes: np.ndarray) -> np.ndarray:
        """The smallest Hamming distance from each of ``hashes`` ((n, 32) uint8) to the list (257: empty list)."""
        best = np.full(len(hashes), 257, np.int64)
        if len(self.words) == 0:
            return best
        for k, query in enumerate(_words(hashes)):
            for start in range(0, len(self.words), _PDQ_CHUNK):
                chunk = self.words[start : start + _PDQ_CHUNK]
                bits = np.bitwise_count(chunk ^ query)  # uint8 per word; four words sum to at most 256
                distance = bits[:, 0].astype(np.uint16) + bits[:, 1] + bits[:, 2] + bits[:, 3]
                best[k] = min(best[k], int(distance.min()))
        return best

    def within(self, hashes: np.ndarray, distance: int) -> np.ndarray:
        return self.nearest(hashes) <= distance


def hex_rows(values: list[str], width: int) -> np.ndarray:
    """Hex strings of ``width`` bytes each as an (n, width) uint8 array."""
    return np.frombuffer(bytes.fromhex("".join(values)), np.uint8).reshape(len(values), width)


def url_digests(urls: list[str], kind: str) -> np.ndarray:
    """The ``kind`` digest of each URL as written in the page (its UTF-8 bytes), an (n, width) uint8 array."""
    name = URL_KINDS[kind]
    raw = b"".join(hashlib.new(name, u.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest() for u in urls)
    return np.frombuffer(raw, np.uint8).reshape(len(urls), DIGEST_BYTES[name])


def pdq_hash(data: bytes) -> tuple[bytes, int] | None:
    """The PDQ hash (32 bytes, ThreatExchange's hex order) and quality of an image's bytes, or None when
    Pillow cannot decode them (the image rules reject those). Needs the ``pdqhash`` package."""
    import pdqhash
    from PIL import Image

    from filters.image import DECODE_ERRORS

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (PDQ_MAX_SIDE, PDQ_MAX_SIDE))
            img.thumbnail((PDQ_MAX_SIDE, PDQ_MAX_SIDE))
            pixels = np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, *DECODE_ERRORS):
        return None
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    # pdqhash's vector runs from bit 255 down to bit 0: packed MSB first, it is the hex ThreatExchange prints
    return np.packbits(np.asarray(bits, np.uint8)).tobytes(), int(quality)
