"""ORB local features for near-duplicate verification (curation/imagehash/keypoints.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation.imagehash.keypoints import (
    EMPTY,
    FEATURES_MAX,
    FEATURES_SIDE,
    THUMB_SIDE,
    FeatureParams,
    LocalFeatures,
    _orb,
    features_from_gray,
    pack_features,
    small_gray,
    spread,
    unpack_features,
)
from tests.conftest import photo_files


def _gray(index: int = 0) -> np.ndarray:
    _, data = photo_files(index + 1)[index]
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_small_copy_has_the_configured_longer_side():
    gray = _gray()
    small = small_gray(gray)
    assert max(small.shape) == FEATURES_SIDE
    assert abs(small.shape[0] / small.shape[1] - gray.shape[0] / gray.shape[1]) < 0.02


@pytest.mark.parametrize("shape", [(1200, 1600), (1597, 900), (700, 530), (300, 257), (3000, 40)])
def test_small_copy_is_an_area_average_of_the_picture(shape):
    """The two-step shrink (whole factor, then the rest) against one area resize (OpenCV INTER_AREA) of
    a real photo enlarged to web sizes: the same size, the same picture within a few gray levels."""
    import cv2

    photo = Image.fromarray(_gray()).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    gray = np.asarray(photo)
    small = small_gray(gray)
    scale = FEATURES_SIDE / max(shape)
    size = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))
    reference = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    assert small.shape == reference.shape and small.dtype == np.uint8
    diff = np.abs(small.astype(np.float64) - reference)
    assert diff.mean() < 4.0 and np.percentile(diff, 99) < 40
    assert abs(small.mean() - reference.mean()) < 1.0  # an average: no brightness shift


def test_a_photo_gets_at_most_the_configured_keypoints_spread_over_the_picture():
    f = features_from_gray(_gray())
    assert 0 < len(f) <= FEATURES_MAX
    assert f.descriptors.shape == (len(f), 32) and f.descriptors.dtype == np.uint8
    w, h = f.size
    cells = {(int(x * 4 / w), int(y * 4 / h)) for x, y in f.xy}
    assert len(cells) >= 10  # the spread keeps keypoints in most of the 16 cells of a real photo


def test_a_tiny_or_flat_picture_has_no_features():
    assert len(features_from_gray(np.zeros((20, 20), np.uint8))) == 0
    assert len(features_from_gray(np.full((300, 300), 128, np.uint8))) == 0


def test_packed_features_round_trip_at_one_eighth_pixel():
    f = features_from_gray(_gray(1))
    blob = pack_features(f)
    th, tw = f.thumb.shape
    assert len(blob) == 3 + 8 + 36 * len(f) + tw * th
    back = unpack_features(blob)
    assert back.size == f.size
    np.testing.assert_array_equal(back.descriptors, f.descriptors)
    np.testing.assert_array_equal(back.thumb, f.thumb)
    assert np.abs(back.xy - f.xy).max() <= 1 / 16 + 1e-6
    assert len(unpack_features(None)) == 0 and len(unpack_features(pack_features(EMPTY))) == 0
    assert unpack_features(pack_features(EMPTY)).thumb is None


def test_the_tiny_copy_is_the_small_copy_at_thumb_side():
    f = features_from_gray(_gray(2))
    assert max(f.thumb.shape) == THUMB_SIDE and f.thumb.dtype == np.uint8
    w, h = f.size
    assert abs(f.thumb.shape[0] / f.thumb.shape[1] - h / w) < 0.05


def test_blobs_of_the_short_layout_unpack_without_a_tiny_copy():
    f = features_from_gray(_gray(1))
    xy = np.clip(np.rint(f.xy * 8), 0, 65535).astype("<u2")
    records = np.concatenate([xy.view(np.uint8).reshape(-1, 4), f.descriptors], axis=1)
    old = np.array(f.size, "<u2").tobytes() + records.tobytes()  # the short layout: size, then records, no magic
    back = unpack_features(old)
    assert back.thumb is None and back.size == f.size
    np.testing.assert_array_equal(back.descriptors, f.descriptors)
    assert unpack_features(pack_features(LocalFeatures(f.xy, f.descriptors, f.size))).thumb is None


def test_a_blob_that_is_neither_layout_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="not packed local features"):
        unpack_features(b"\x01\x02\x03\x04\x05")


def _spread_reference(keypoints, shape, grid, total):
    """The per-keypoint loop spread() replaced (kept here to pin its choice and order)."""
    h, w = shape
    per_cell = max(1, total // (grid * grid))
    order = np.argsort(np.array([-k.response for k in keypoints]), kind="stable")
    cell = [min(grid - 1, int(keypoints[i].pt[1] * grid / h)) * grid + min(grid - 1, int(keypoints[i].pt[0] * grid / w)) for i in order]
    taken: dict[int, int] = {}
    chosen, rest = [], []
    for i, c in zip(order, cell):
        if taken.get(c, 0) < per_cell:
            taken[c] = taken.get(c, 0) + 1
            chosen.append(i)
        else:
            rest.append(i)
    chosen += rest[: max(0, total - len(chosen))]
    return [keypoints[i] for i in chosen]


def test_spread_chooses_the_reference_loops_keypoints_in_its_order():
    import cv2

    params = FeatureParams()
    orb = _orb(params)
    for _, data in photo_files(12):
        small = small_gray(np.asarray(Image.open(io.BytesIO(data)).convert("L")))
        found = orb.detect(small, None)
        for grid, total in ((params.grid, params.max_features), (3, 20), (4, 400), (1, 7)):
            assert [id(k) for k in spread(found, small.shape, grid, total)] == [id(k) for k in _spread_reference(found, small.shape, grid, total)]
    rng = np.random.default_rng(0)
    for n in (1, 5, 50, 300):  # ties in response, points on the cell edges and the far border
        xy = rng.choice([0.0, 15.5, 16.0, 31.999, 32.0, 63.0, 64.0], size=(n, 2)) + rng.integers(0, 2, (n, 2)) * rng.random((n, 2))
        keypoints = [cv2.KeyPoint(float(x), float(y), 7.0, -1, float(r)) for (x, y), r in zip(xy, rng.integers(0, 4, n) / 4)]
        for grid, total in ((4, 96), (4, 8), (2, 3)):
            assert [id(k) for k in spread(keypoints, (64, 64), grid, total)] == [id(k) for k in _spread_reference(keypoints, (64, 64), grid, total)]
    assert spread([], (64, 64), 4, 96) == []


def test_a_low_texture_picture_is_detected_again_at_a_lower_fast_threshold():
    from dataclasses import replace

    from curation.imagehash.keypoints import FeatureParams
    from tests.conftest import shared

    shared("images", "photos")  # the real photo's texture (generated pictures at this contrast have no corners at all)
    gray = _gray(0).astype(np.float64)
    faint = np.clip(gray * 0.12 + 110, 0, 255).astype(np.uint8)  # the same photo at an eighth of its contrast
    once = features_from_gray(faint, replace(FeatureParams(), retry_below=0))
    assert len(once) < FeatureParams().retry_below  # few corners at the usual threshold
    again = features_from_gray(faint)
    assert len(again) == FEATURES_MAX
    # a textured photo never needs the second detection: the same keypoints either way
    np.testing.assert_array_equal(features_from_gray(_gray(1)).xy, features_from_gray(_gray(1), replace(FeatureParams(), retry_below=0)).xy)
