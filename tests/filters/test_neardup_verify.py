"""Verification of near-duplicate candidate pairs with ORB + RANSAC (filters/neardup_verify.py)."""

from __future__ import annotations


import numpy as np
from PIL import Image

from curation.local_features import EMPTY, features_from_gray
from filters.neardup_verify import VerifyRules, descriptor_distances, linked, mutual_matches, verify_pair
from tests.conftest import photo_image, sticker


def _features(image: Image.Image):
    return features_from_gray(np.asarray(image.convert("L")))


def test_descriptor_distance_is_hamming():
    a = np.array([[0] * 32, [255] * 32], np.uint8)
    b = np.array([[1] + [0] * 31], np.uint8)
    np.testing.assert_array_equal(descriptor_distances(a, b), [[1], [255]])


def test_mutual_matches_keep_only_pairs_that_choose_each_other_within_the_limit():
    a = np.array([[0] * 32, [15] * 32], np.uint8)
    b = np.array([[0] * 32, [255] * 32], np.uint8)
    ia, ib = mutual_matches(a, b, max_distance=64)
    assert list(zip(ia.tolist(), ib.tolist())) == [(0, 0)]


def test_rotated_and_cropped_copy_is_verified():
    image = photo_image(0)
    w, h = image.size
    copy = image.rotate(12, Image.Resampling.BICUBIC).crop((w // 10, h // 10, w - w // 10, h - h // 10))
    verdict = verify_pair(_features(image), _features(copy))
    assert verdict.verified(VerifyRules())
    assert abs(abs(verdict.angle) - 12) < 2


def test_different_photos_are_not_verified():
    verdict = verify_pair(_features(photo_image(0)), _features(photo_image(1)))
    assert not verdict.verified(VerifyRules())


def test_same_caption_band_on_two_different_photos_is_not_verified():
    a, b = sticker(photo_image(2)), sticker(photo_image(3).resize(photo_image(2).size))
    verdict = verify_pair(_features(a), _features(b))
    assert not verdict.verified(VerifyRules())


def test_empty_features_never_verify():
    assert verify_pair(EMPTY, _features(photo_image(0))).inliers == 0


def test_linking_rule():
    rules = VerifyRules(link_distance=2, candidate_distance=10)
    yes = verify_pair(_features(photo_image(0)), _features(photo_image(0)))
    assert linked(2, None, rules)
    assert not linked(3, None, rules)
    assert linked(10, yes, rules)
    assert not linked(11, yes, rules)


def test_overlap_box_is_the_part_the_other_picture_maps_onto():
    from filters.neardup_verify import _overlap

    half_scale_shifted = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, 20.0]])  # other -> self
    assert _overlap((100, 100), (100, 100), half_scale_shifted) == (10.0, 20.0, 60.0, 70.0)
    assert _overlap((40, 40), (100, 100), half_scale_shifted) == (10.0, 20.0, 40.0, 40.0)  # clipped to the picture


def test_cells_counted_over_the_overlap_when_asked():
    image = photo_image(0)
    w, h = image.size
    crop = image.crop((0, 0, w // 2, h))
    whole = verify_pair(_features(image), _features(crop), VerifyRules(cells_in_overlap=False))
    shared = verify_pair(_features(image), _features(crop), VerifyRules(cells_in_overlap=True))
    assert shared.inliers == whole.inliers  # same matches and transform (RANSAC is seeded)
    assert shared.cells >= whole.cells  # the half the crop shows is split into 16 cells, not 8
    either = verify_pair(_features(image), _features(crop), VerifyRules(cells_on_either=True))
    assert either.cells >= whole.cells  # the crop's own picture holds inliers in more cells than the original
