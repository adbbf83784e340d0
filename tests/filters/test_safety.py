"""filters/safety.py: list parsing, exact lookups against Python sets, PDQ distances against int.bit_count."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from filters.safety import (
    ExactSet, HashListError, PdqSet, SafetyList, SafetyOptions, hex_rows, parse_hashes, pdq_hash, url_digests,
)


def _digests(n: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, width), dtype=np.uint8)


def test_list_file_skips_comments_and_blank_lines_and_reads_either_case():
    a, b = hashlib.md5(b"a").hexdigest(), hashlib.md5(b"b").hexdigest()
    text = f"# list of 2024-01\n\n{a}  # first\n   {b.upper()}\n#{a}\n".encode()
    rows = parse_hashes(text, 16)
    assert [r.tobytes().hex() for r in rows] == [a, b]


def test_a_malformed_line_is_named_by_number_never_by_content():
    good = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(HashListError, match="line 3 ") as caught:
        parse_hashes(f"{good}\n# c\n{good[:-2]}zz\n".encode(), 32)
    assert good[:10] not in str(caught.value)
    with pytest.raises(HashListError, match="line 2 "):
        parse_hashes(f"{good}\n{good[:40]}\n".encode(), 32)  # a SHA-1 in a SHA-256 list


@pytest.mark.parametrize("width", [16, 20, 32])
def test_exact_set_answers_as_a_python_set_of_the_digests(width):
    listed = _digests(5_000, width, seed=1)
    others = _digests(5_000, width, seed=2)
    lookup = ExactSet(listed)
    queries = np.concatenate([listed[::7], others])
    expected = {r.tobytes() for r in listed}
    assert lookup.contains(queries).tolist() == [q.tobytes() in expected for q in queries]
    assert lookup.nbytes == 16 * len(listed)


def test_md5_entries_differing_in_the_last_byte_or_sharing_their_first_eight_are_told_apart():
    base = _digests(50, 16, seed=3)
    twins = base.copy()
    twins[:, 15] ^= 1  # same first 15 bytes
    cousins = base.copy()
    cousins[:, 8:] = _digests(50, 8, seed=4)  # same first 8 bytes: one run of equal high words
    lookup = ExactSet(np.concatenate([base, cousins[:25]]))
    assert lookup.contains(base).all()
    assert not lookup.contains(twins).any()
    assert lookup.contains(cousins).tolist() == [True] * 25 + [False] * 25


def test_empty_list_matches_nothing():
    assert not ExactSet(np.zeros((0, 16), np.uint8)).contains(_digests(3, 16)).any()
    assert PdqSet(np.zeros((0, 32), np.uint8)).nearest(_digests(2, 32)).tolist() == [257, 257]


def test_url_digests_are_of_the_url_as_written():
    urls = ["http://example.com/a b.jpg", "https://bücher.example/x.png"]
    md5 = url_digests(urls, "url_md5")
    sha = url_digests(urls, "url_sha256")
    assert [r.tobytes().hex() for r in md5] == [hashlib.md5(u.encode()).hexdigest() for u in urls]
    assert [r.tobytes().hex() for r in sha] == [hashlib.sha256(u.encode()).hexdigest() for u in urls]


def _flip(row: np.ndarray, bits: int, rng) -> np.ndarray:
    out = np.unpackbits(row)
    out[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(out)


def test_pdq_distance_equals_popcount_of_the_xor_and_matches_within_the_distance():
    rng = np.random.default_rng(5)
    listed = _digests(300, 32, seed=6)
    queries = np.stack([_flip(listed[0], 31, rng), _flip(listed[1], 32, rng), _digests(1, 32, seed=7)[0]])
    lookup = PdqSet(listed)
    as_int = [int.from_bytes(r.tobytes(), "big") for r in listed]
    expected = [min((int.from_bytes(q.tobytes(), "big") ^ e).bit_count() for e in as_int) for q in queries]
    assert lookup.nearest(queries).tolist() == expected
    assert expected[0] == 31 and expected[1] == 32
    assert lookup.within(queries, 31).tolist() == [True, False, False]


def test_hex_rows_read_hex_strings():
    assert hex_rows(["00ff", "0a0b"], 2).tolist() == [[0, 255], [10, 11]]


def test_a_list_needs_a_known_kind_and_unique_names():
    with pytest.raises(ValueError, match="kind 'image_crc'"):
        SafetyList("a", "a.txt", "image_crc")
    with pytest.raises(ValueError, match="unique"):
        SafetyOptions((SafetyList("a", "a.txt", "url_md5"), SafetyList("a", "b.txt", "image_md5")))
    options = SafetyOptions((SafetyList("a", "a.txt", "image_sha1"), SafetyList("b", "b.txt", "image_md5")))
    assert options.image_algorithms() == ("md5", "sha1")
    assert SafetyList("ncmec", "x", "image_md5").detail == "safety list ncmec (image_md5)"


def _photo(seed: int, size=(640, 480), quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_pdq_hash_is_the_reference_bit_vector_packed_most_significant_bit_first():
    pdqhash = pytest.importorskip("pdqhash")
    data = _photo(1)
    digest, quality = pdq_hash(data)
    with Image.open(io.BytesIO(data)) as img:
        img.thumbnail((512, 512))
        bits, expected_quality = pdqhash.compute(np.asarray(img.convert("RGB")))
    assert len(digest) == 32 and quality == expected_quality
    assert np.unpackbits(np.frombuffer(digest, np.uint8)).tolist() == list(bits)


def test_pdq_of_a_recompressed_copy_is_near_and_of_another_picture_far():
    pytest.importorskip("pdqhash")
    original = pdq_hash(_photo(1))[0]
    copy = pdq_hash(_photo(1, size=(600, 450), quality=60))[0]
    other = pdq_hash(_photo(2))[0]
    lookup = PdqSet(np.frombuffer(original, np.uint8).reshape(1, 32))
    near, far = lookup.nearest(np.frombuffer(copy + other, np.uint8).reshape(2, 32)).tolist()
    assert near <= 31 < far
    assert pdq_hash(b"not an image") is None
