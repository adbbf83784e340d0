"""The extra-window and verification options of the dedup step in the in-memory reference: rotated / deep /
occlusion window keys and the ORB verification of candidate pairs (filters.dedup.verify), on real photos and their edits."""

from __future__ import annotations

from dataclasses import replace

import io

import pyarrow as pa
import pytest
from PIL import Image

from curation.imagehash import keys_many
from curation.imagehash.windows import MASKED_CENTRES, ROTATION_ANGLES, deep_lengths, deep_places
from curation.imagehash.keypoints import unpack_features
from jobs.stages.dedup import hash_images, keys_table
from filters.dedup import DedupConfigError, DedupRules, KeyRules, LinkRules, decide, link_detail
from tests.conftest import photo_files, shared, sticker

OFF = DedupRules(keys=KeyRules(key="robust"), links=LinkRules(max_distance=4))  # the robust key within 4 bits, crop windows only
# the bench's operating point: candidates within 10 bits, verified; occlusion windows within 4
ON = DedupRules(
    keys=KeyRules(key="robust", rotation_windows=True, deep_windows=True, occlusion_windows=True),
    links=LinkRules(max_distance=10, verify=True),
)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def rotated(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.rotate(12, Image.Resampling.BICUBIC).crop((w // 10, h // 10, w - w // 10, h - h // 10))


def edited_rows() -> dict[str, bytes]:
    """Four real photos, each with a copy turned by 12 degrees and cropped, and one under a banner."""
    shared("images", "photos")
    rows = {}
    for i, (_, data) in enumerate(photo_files(4)):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        rows[f"p{i}"] = jpeg(image)
        rows[f"p{i}-rot"] = jpeg(rotated(image))
        rows[f"p{i}-sticker"] = jpeg(sticker(image))
    return rows


def photo(uid: str) -> str:
    return uid.split("-")[0]


def keys_of(rows: dict[str, bytes], rules: DedupRules) -> pa.Table:
    uids = list(rows)
    table = pa.table({"uid": uids, "text": uids, "width": [100] * len(uids), "height": [1] * len(uids)})
    return keys_table(table, 0, hash_images(pa.array([rows[u] for u in uids], pa.binary()), rules.keys, rules.keypoints))


def decided(rows: dict[str, bytes], rules: DedupRules) -> dict[str, str]:
    return {r["uid"]: r["detail"] for r in decide(keys_of(rows, rules), rules).to_pylist()}


def test_edited_copies_are_linked_verified_and_missed_without_verification():
    rows = edited_rows()
    off, on = decided(rows, OFF), decided(rows, ON)
    found = {"p1-sticker", "p2-sticker", "p3-rot"}  # what the options add on these photos
    assert not found & set(off)
    assert found <= set(on)
    assert set(off) <= set(on)
    assert all(photo(on[u].split()[0]) == photo(u) for u in on)  # each to its own photo
    assert " verified inliers=" in on["p2-sticker"] and on["p2-sticker"].startswith("p2 robust")
    # p1's sticker: its window link (distance 6) has too few keypoints in agreement for the cells rule, but the pixels
    # agree once the keypoints' transform lines the two pictures up
    assert on["p1-sticker"].startswith("p1 robust-window distance=6 verified") and " agreement=" in on["p1-sticker"]
    keypoints_only = decided(rows, replace(ON, links=replace(ON.links, verify_photometric=False)))
    assert set(keypoints_only) <= set(on) and " agreement=" not in " ".join(keypoints_only.values())
    assert keypoints_only["p1-sticker"].startswith("p1 robust-occlusion distance=")  # then only an occlusion window finds it


def test_different_photos_under_the_same_banner_or_turn_are_not_linked():
    rows = {u: d for u, d in edited_rows().items() if u.endswith(("-sticker", "-rot"))}
    got = decided(rows, ON)
    assert all(photo(d.split()[0]) == photo(u) for u, d in got.items())  # only a photo's own two edits, never across photos


def test_keys_many_adds_the_window_keys_and_features_only_when_asked():
    _, data = photo_files(1)[0]
    plain = keys_many([data])[0]
    full = keys_many([data], rotation_windows=True, deep_windows=True, occlusion_windows=True, local_features=True)[0]
    assert plain.features is None and plain.occlusion == ()
    size = Image.open(io.BytesIO(data)).size
    deep = sum(len(deep_places(length)) for _, length in deep_lengths(*size))
    assert full.windows[: len(plain.windows)] == plain.windows and len(full.windows) == len(plain.windows) + 4 * len(ROTATION_ANGLES) + deep
    assert len(full.occlusion) == 12 + len(MASKED_CENTRES)
    assert len(unpack_features(full.features).xy) > 20


def test_keys_many_batches_the_rotated_windows_of_the_keyed_rows_only():
    import numpy as np

    from curation.imagehash.windows import rotated_window_keys
    from curation.imagehash import resize_gray_32

    photos = [data for _, data in photo_files(3)]
    flat = io.BytesIO()
    Image.new("L", (300, 200), 128).save(flat, "PNG")
    got = keys_many([photos[0], None, flat.getvalue(), photos[1], b"junk", photos[2]], rotation_windows=True)
    assert got[1].phash is None and got[2].key is None and got[4].phash is None
    for data, r in zip(photos, (got[0], got[3], got[5])):
        image = Image.open(io.BytesIO(data))
        expected = rotated_window_keys(resize_gray_32(np.asarray(image.convert("L"))), *image.size)
        assert r.windows[20:] == expected


def test_an_alpha_image_s_features_are_those_of_its_composited_gray():
    import numpy as np

    from curation.imagehash.keypoints import features_from_gray, pack_features
    from curation.imagehash.robust import composited_gray

    _, data = photo_files(1)[0]
    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")).copy()
    rgba[:, : rgba.shape[1] // 4, 3] = 0
    png = io.BytesIO()
    Image.fromarray(rgba).save(png, "PNG")
    got = keys_many([png.getvalue()], local_features=True)[0]
    assert got.features == pack_features(features_from_gray(composited_gray(Image.open(io.BytesIO(png.getvalue())))[0]))


def test_a_verified_link_s_detail_names_the_verdict():
    assert link_detail("u1", "robust", 7, True, 5, False, 23, 9) == "u1 robust-window distance=7 verified inliers=23 cells=9 to 0000000000000005"
    assert link_detail("u1", "robust", 2, False, 5, False, None, None) == "u1 robust distance=2 to 0000000000000005"
    assert link_detail("u1", "robust", 7, True, 5, False, 8, 3, 0.8612) == (
        "u1 robust-window distance=7 verified inliers=8 cells=3 agreement=0.86 to 0000000000000005"
    )


@pytest.mark.parametrize(
    "keys, links, message",
    [
        ({}, {"verify": True, "max_distance": 10}, 'verify needs \\[dedup.rules.keys\\] key = "robust"'),
        ({"key": "robust"}, {"verify": True}, "max_distance > 0"),
        ({"key": "robust"}, {"verify": True, "max_distance": 1}, "verify_link_distance must be 0..max_distance"),
        ({"key": "robust"}, {"verify": True, "max_distance": 4, "exact": False}, "exact = true"),
        ({"occlusion_windows": True, "key": "robust"}, {"max_distance": 4}, "occlusion_windows needs \\[dedup.rules.links\\] verify = true"),
        ({"key": "robust"}, {"verify": True, "max_distance": 4, "verify_min_agreement": 0.0}, "verify_min_agreement"),
        ({"rotation_windows": True}, {}, "rotation_windows needs"),
        ({"deep_windows": True, "key": "robust", "crop_windows": False}, {}, "deep_windows needs"),
        ({"key": "robust"}, {"verify": True, "max_distance": 4, "verify_min_cells": 17}, "verify_min_cells"),
        ({"key": "robust"}, {"verify": True, "max_distance": 4, "verify_min_inliers": 2}, "verify_min_inliers"),
        ({}, {"occlusion_distance": 0}, "occlusion_distance"),
    ],
)
def test_invalid_window_and_verify_options_raise_config_error(keys, links, message):
    with pytest.raises(DedupConfigError, match=message):
        DedupRules(keys=KeyRules(**keys), links=LinkRules(**links))
