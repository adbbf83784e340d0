"""filters.dedup: the banded join finds exactly the pairs within k, components, the kept-row rule,
and every decision step on real photos and their transformed copies, without Spark."""

from __future__ import annotations

import io
import random
import re

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageEnhance

from curation.imagehash import hamming, phash
from filters.dedup import (
    BLOCKLIST,
    KEYS,
    DedupConfigError,
    DedupRules,
    KeyRules,
    LinkRules,
    blocklist_pairs,
    collapse_groups,
    components,
    decide,
    int64_to_phash,
    near_pairs,
    phash_to_int64,
    plan_bands,
    text_key,
    window_pairs,
)
from schemas import Reason
from tests.conftest import shared


def _random_hashes(n: int, planted: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64, endpoint=True)
    copies = hashes[:planted].view(np.uint64).copy()
    for i in range(planted):
        for bit in rng.choice(64, int(rng.integers(0, k + 2)), replace=False):
            copies[i] ^= np.uint64(1 << int(bit))
    return np.unique(np.concatenate([hashes, copies.view(np.int64)]))


def _brute_force(a: np.ndarray, b: np.ndarray, k: int, same: bool) -> set[tuple[int, int]]:
    d = np.bitwise_count(a.view(np.uint64)[:, None] ^ b.view(np.uint64)[None, :])
    close = np.triu(d <= k, 1) if same else d <= k
    i, j = np.nonzero(close)
    return set(zip(a[i].tolist(), b[j].tolist()))


def _pairs(table: pa.Table) -> set[tuple[int, int]]:
    return set(zip(table.column("a").to_pylist(), table.column("b").to_pylist()))


@pytest.mark.parametrize("k, bands", [(0, 0), (1, 0), (3, 0), (3, 4), (4, 0), (4, 5), (4, 7), (6, 0)])
def test_banded_join_finds_exactly_the_pairs_within_k(k, bands):
    hashes = _random_hashes(1500, 300, k)
    found = near_pairs(hashes, k, bands)
    assert _pairs(found) == _brute_force(hashes, hashes, k, same=True)
    assert all(d <= k for d in found.column("distance").to_pylist())


def test_blocklist_join_finds_exactly_the_listed_hashes_within_k():
    hashes = _random_hashes(1000, 0, 3)
    listed = _random_hashes(200, 0, 3, seed=1)
    listed[:50] = (hashes[:50].view(np.uint64) ^ np.uint64(0b1011)).view(np.int64)  # distance 3
    listed[50:60] = (hashes[50:60].view(np.uint64) ^ np.uint64(0b11111)).view(np.int64)  # distance 5
    found = blocklist_pairs(hashes, listed, 3)
    assert _pairs(found) == _brute_force(hashes, listed, 3, same=False)
    assert len(found) >= 50


@pytest.mark.parametrize("k, chunk", [(4, 0), (10, 0), (10, 500)])
def test_cross_join_of_a_few_keys_with_many_clustered_windows_is_exact(k, chunk, monkeypatch):
    """A window join's shape: the right side ~100x the left and clustered (real keys share most bits), so
    a (band, key) run holds thousands of right-side rows; only left x right pairs are checked per run
    (in bounded chunks), and the result is still every pair within k (brute force), hashes present on
    both sides included."""
    rng = np.random.default_rng(k)
    centres = _random_hashes(40, 0, k, seed=k)
    def near(n: int, bits: int) -> np.ndarray:
        flips = np.zeros(n, np.uint64)
        for _ in range(bits):
            flips |= np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
        return (centres[rng.integers(0, len(centres), n)].view(np.uint64) ^ flips).view(np.int64)
    keys = near(150, 6)
    windows = np.concatenate([near(15_000, 7), keys[:20]])
    if chunk:  # runs of more than `chunk` cross pairs are checked a block of left rows at a time, the rest in chunks
        monkeypatch.setattr("filters.dedup.bands.CROSS_CHUNK", chunk)
    found = blocklist_pairs(keys, windows, k)
    assert _pairs(found) == _brute_force(keys, windows, k, same=False)
    assert len(found) > 20  # the shared hashes (distance 0) and many more


def test_band_plan_is_k_plus_1_bands_when_small_and_more_blocks_at_scale():
    assert plan_bands(4, 1_000).describe() == {"blocks": 5, "tables": 5, "min_key_bits": 12}
    large = plan_bands(4, 1_000_000)
    assert len(large.blocks) > 5 and large.key_bits >= 20  # ~64/5 = 12-bit keys would give ~300 M candidates
    assert plan_bands(0, 10).describe() == {"blocks": 1, "tables": 1, "min_key_bits": 64}
    assert len(plan_bands(3, 10, bands=8).blocks) == 8


def test_components_label_every_node_with_the_smallest_of_its_group():
    a = np.array([5, 7, 1, 9, 20], np.int64)
    b = np.array([7, 1, 3, 9 + 1, 30], np.int64)
    assert components(a, b) == {1: 1, 3: 1, 5: 1, 7: 1, 9: 9, 10: 9, 20: 20, 30: 20}
    assert components(np.zeros(0, np.int64), np.zeros(0, np.int64)) == {}


def _keys(rows: list[dict]) -> pa.Table:
    defaults = {"shard": 0, "text_key": "", "pixels": 100}
    return KEYS.from_pylist([{**defaults, "row": i, **r} for i, r in enumerate(rows)])


def test_kept_row_is_the_largest_image_then_the_lowest_uid_whatever_the_order():
    rows = [
        {"uid": "c", "phash": 1, "pixels": 500},
        {"uid": "b", "phash": 1, "pixels": 900},
        {"uid": "a", "phash": 1, "pixels": 900},
        {"uid": "z", "phash": 2, "pixels": 10},
    ]
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        kept, dropped = collapse_groups(_keys(shuffled), ["phash"], Reason.DUPLICATE_PHASH)
        assert sorted(kept.column("uid").to_pylist()) == ["a", "z"]
        assert sorted(zip(dropped.column("uid").to_pylist(), dropped.column("detail").to_pylist())) == [("b", "a"), ("c", "a")]
        assert set(dropped.column("reason").to_pylist()) == {"duplicate_phash"}


def test_text_key_normalises_case_width_and_whitespace():
    assert text_key("  A  Red\tBIKE\n") == text_key("a red bike") == "a red bike"
    assert text_key("ｆｕｌｌ width") == "full width"
    assert text_key(None) == ""


def test_pair_then_phash_duplicates_and_their_switches():
    rows = [
        {"uid": "u1", "phash": 7, "text_key": "a dog"},
        {"uid": "u2", "phash": 7, "text_key": "a dog"},  # same image, same text
        {"uid": "u3", "phash": 7, "text_key": "a cat"},  # same image, other text
        {"uid": "u4", "phash": 8, "text_key": "a dog"},
    ]
    reasons = {r["uid"]: (r["reason"], r["detail"]) for r in decide(_keys(rows), DedupRules()).to_pylist()}
    assert reasons == {"u2": ("duplicate_pair", "u1"), "u3": ("duplicate_phash", "u1")}
    pairs_only = decide(_keys(rows), DedupRules(links=LinkRules(exact=False))).to_pylist()
    assert [(r["uid"], r["reason"]) for r in pairs_only] == [("u2", "duplicate_pair")]
    assert decide(_keys(rows), DedupRules(links=LinkRules(exact=False, pairs=False))).num_rows == 0


def test_config_errors_name_the_key():
    with pytest.raises(DedupConfigError, match="max_distance"):
        DedupRules(links=LinkRules(max_distance=40))
    with pytest.raises(DedupConfigError, match="phash_mode"):
        DedupRules(keys=KeyRules(phash_mode="turbo"))
    with pytest.raises(DedupConfigError, match="bands"):
        DedupRules(links=LinkRules(max_distance=4, bands=3))


def test_phash_int64_conversion_rejects_what_is_not_16_hex():
    hashes = ["0000000000000000", "ffffffffffffffff", "8000000000000001"]
    assert int64_to_phash(phash_to_int64(hashes)) == hashes
    with pytest.raises(ValueError, match="16-hex"):
        phash_to_int64(["abc"])
    with pytest.raises(ValueError, match="16-hex"):
        phash_to_int64(["zzzzzzzzzzzzzzzz"])


# --- real photos and transformed copies ------------------------------------------------------------

NEAR_K = 6  # downscale, recompress, 0.5 % crop and +10 % brightness stay within 6 bits on these photos
PHOTOS = [
    "coco-val2017-000000397133.jpg",
    "coco-train2017-000000107438.jpg",
    "skimage-astronaut.png",
    "skimage-coffee.png",
    "skimage-chelsea.png",
]
UNRELATED = ["coco-val2017-000000551780.jpg", "skimage-camera.png", "skimage-rocket.jpg", "skimage-coins.png"]


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def transformed_copies(image: Image.Image) -> dict[str, Image.Image | bytes]:
    w, h = image.size
    m = max(1, round(min(w, h) * 0.005))
    return {
        "resized": image.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.LANCZOS),
        "recompressed": _jpeg(image, 55),
        "cropped": image.crop((m, m, w - m, h - m)),
        "brighter": ImageEnhance.Brightness(image).enhance(1.1),
    }


def photo_rows() -> list[dict]:
    """Originals (uid o-NAME, the larger pixels), their copies (uid c-KIND-NAME) and unrelated photos."""
    rows = []
    for name in PHOTOS + UNRELATED:
        image = Image.open(shared("images", "photos", name)).convert("RGB")
        rows.append({"uid": f"o-{name}", "data": _jpeg(image), "pixels": image.width * image.height, "text": f"photo {name}"})
        if name in PHOTOS:
            for kind, copy in transformed_copies(image).items():
                data = copy if isinstance(copy, bytes) else _jpeg(copy)
                size = Image.open(io.BytesIO(data)).size
                rows.append({"uid": f"c-{kind}-{name}", "data": data, "pixels": size[0] * size[1] - 1, "text": f"{kind} {name}"})
    return rows


def _photo_keys(rows: list[dict]) -> pa.Table:
    return _keys([{"uid": r["uid"], "phash": phash_to_int64([phash(r["data"])])[0], "text_key": text_key(r["text"]),
                   "pixels": r["pixels"]} for r in rows])


def test_transformed_copies_are_near_duplicates_and_unrelated_photos_are_not():
    rows = photo_rows()
    decisions = decide(_photo_keys(rows), DedupRules(links=LinkRules(max_distance=NEAR_K)))
    rejected = {r["uid"]: r for r in decisions.to_pylist()}
    copies = {r["uid"] for r in rows if r["uid"].startswith("c-")}
    assert set(rejected) == copies  # every copy found, no original and no unrelated photo touched
    for uid, r in rejected.items():
        assert r["reason"] in ("near_duplicate", "duplicate_phash")
        kept = r["detail"].split()[0]  # the row kept at that step; a later step may remove it in turn
        while kept in rejected:
            kept = rejected[kept]["detail"].split()[0]
        if r["reason"] == "near_duplicate":  # then which key, how far, to which other key
            assert re.fullmatch(r"\S+ phash distance=[1-4] to [0-9a-f]{16}", r["detail"]), r["detail"]
        assert kept == "o-" + uid.split("-", 2)[2]  # in the end the original (the largest image) stays
    assert "near_duplicate" in {r["reason"] for r in rejected.values()}


def test_without_near_dedup_only_identical_hashes_go():
    rows = photo_rows()
    keys = _photo_keys(rows)
    decisions = decide(keys, DedupRules(links=LinkRules(max_distance=0)))
    hashes = dict(zip(keys.column("uid").to_pylist(), keys.column("phash").to_pylist()))
    for r in decisions.to_pylist():
        assert hashes[r["uid"]] == hashes[r["detail"]]


def test_stereo_views_are_four_bits_apart_so_k_decides_whether_they_are_duplicates():
    # the Middlebury stereo pair (a documented hard negative): pHash cannot tell the two views apart
    # beyond k = 3; the choice of k is the user's
    left, right = (shared("images", "photos", f"skimage-motorcycle_{s}.png").read_bytes() for s in ("left", "right"))
    assert hamming(phash(left), phash(right)) == 4


def test_blocklist_removes_matches_with_the_set_named_and_before_any_duplicate_step():
    rows = photo_rows()
    keys = _photo_keys(rows)
    listed = int(phash_to_int64([phash(shared("images", "photos", PHOTOS[0]).read_bytes())])[0])  # the file itself
    blocklist = BLOCKLIST.from_pylist([{"hash": listed, "set_name": "coco-val2017"}, {"hash": listed, "set_name": "another-set"}])
    decisions = {r["uid"]: r for r in decide(keys, DedupRules(links=LinkRules(max_distance=NEAR_K)), blocklist).to_pylist()}
    matched = {u for u, r in decisions.items() if r["reason"] == "eval_set_match"}
    family = {f"o-{PHOTOS[0]}"} | {f"c-{kind}-{PHOTOS[0]}" for kind in ("resized", "recompressed", "cropped", "brighter")}
    assert matched == family  # the original and every copy go as matches, not as duplicates of each other
    detail = decisions[f"o-{PHOTOS[0]}"]["detail"]
    assert detail.startswith(f"another-set {int64_to_phash([listed])[0]} distance=")  # a tie: the lowest set name
    hashes = dict(zip(keys.column("uid").to_pylist(), keys.column("phash").to_pylist()))
    exact = [r["uid"] for r in decide(keys, DedupRules(links=LinkRules(max_distance=0)), blocklist).to_pylist() if r["reason"] == "eval_set_match"]
    assert exact and all(hashes[u] == listed for u in exact)  # k = 0: identical hashes only


def test_decisions_do_not_depend_on_row_order():
    rows = photo_rows()
    keys = _photo_keys(rows)
    expected = decide(keys, DedupRules(links=LinkRules(max_distance=NEAR_K))).select(["uid", "reason", "detail"]).to_pylist()
    order = list(range(keys.num_rows))
    random.Random(3).shuffle(order)
    shuffled = decide(keys.take(order), DedupRules(links=LinkRules(max_distance=NEAR_K))).select(["uid", "reason", "detail"]).to_pylist()
    assert sorted(shuffled, key=lambda r: r["uid"]) == sorted(expected, key=lambda r: r["uid"])



# --- the robust key and blank rows ----------------------------------------------------------------


def test_robust_key_groups_what_phash_does_not_and_blank_rows_never_take_part():
    rows = [
        {"uid": "a", "phash": 100, "robust": 7, "pixels": 900},
        {"uid": "mirror-of-a", "phash": -5_000_000, "robust": 7, "pixels": 800, "text_key": "other"},  # same key
        {"uid": "near-a", "phash": 0x0F0F0F0F0F0F0F0F, "robust": 7 ^ 0b101, "pixels": 700},  # 2 bits from a's key
        {"uid": "blank-1", "phash": -(1 << 63), "robust": None, "blank": True},  # 8000000000000000
        {"uid": "blank-2", "phash": -(1 << 63), "robust": None, "blank": True},  # same pHash: still kept
    ]
    rules = DedupRules(keys=KeyRules(key="robust"), links=LinkRules(max_distance=NEAR_K))
    got = {r["uid"]: (r["reason"], r["detail"]) for r in decide(_keys(rows), rules).to_pylist()}
    assert got == {"mirror-of-a": ("duplicate_phash", "a"), "near-a": ("near_duplicate", "a robust distance=2 to 0000000000000007")}
    on_phash = {r["uid"] for r in decide(_keys(rows), DedupRules(links=LinkRules(max_distance=NEAR_K))).to_pylist()}
    assert on_phash == set()  # plain pHash: nothing in common, and the blank pair is left alone
    with pytest.raises(ValueError, match="robust"):
        decide(_keys([{"uid": "x", "phash": 1}, {"uid": "y", "phash": 1}]), rules)


def test_blocklist_still_matches_on_phash_with_the_robust_key():
    rows = [{"uid": "a", "phash": 100, "robust": 7}, {"uid": "b", "phash": 200, "robust": 100}]
    listed = BLOCKLIST.from_pylist([{"hash": 100, "set_name": "coco"}])
    got = decide(_keys(rows), DedupRules(keys=KeyRules(key="robust")), listed).to_pylist()
    assert [(r["uid"], r["reason"]) for r in got] == [("a", "eval_set_match")]


def test_robust_key_and_blank_options_are_validated():
    with pytest.raises(DedupConfigError, match="key"):
        DedupRules(keys=KeyRules(key="dhash"))
    with pytest.raises(DedupConfigError, match="blank"):
        DedupRules(keys=KeyRules(blank_min_alpha=2.0))
    with pytest.raises(DedupConfigError, match="blank"):
        DedupRules(keys=KeyRules(blank_std=-1))


def test_crop_windows_link_a_key_to_another_row_s_window_but_never_two_windows():
    far = 0x5555_5555_5555_5555
    rows = [
        {"uid": "original", "phash": 1, "robust": 0, "pixels": 900, "windows": [far, 0x00FF_0000_0000_0000]},
        {"uid": "crop", "phash": 2, "robust": far ^ 0b11, "pixels": 800, "windows": [0x7777]},  # 2 bits from a window
        {"uid": "other", "phash": 3, "robust": -1, "pixels": 700, "windows": [0x00FF_0000_0000_0001]},  # window ~ window only
    ]
    rules = DedupRules(keys=KeyRules(key="robust"), links=LinkRules(max_distance=NEAR_K))
    got = {r["uid"]: (r["reason"], r["detail"]) for r in decide(_keys(rows), rules).to_pylist()}
    # the detail says how the row was linked: its key is 2 bits from a window of the key 0000000000000000
    assert got == {"crop": ("near_duplicate", "original robust-window distance=2 to 0000000000000000")}
    plain = DedupRules(keys=KeyRules(key="robust", crop_windows=False), links=LinkRules(max_distance=NEAR_K))
    assert decide(_keys(rows), plain).to_pylist() == []
    pairs = window_pairs(np.array([0, far ^ 0b11, -1]), [r["windows"] for r in rows], NEAR_K)
    assert pairs.to_pylist() == [{"a": 0, "b": far ^ 0b11, "distance": 2, "window": True}]
