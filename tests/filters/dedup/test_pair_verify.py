"""Verification of near-duplicate candidate pairs with ORB + RANSAC (filters/dedup/pair_verify.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from curation.imagehash.keypoints import EMPTY, features_from_gray
from filters.dedup.pair_verify import VerifyRules, block_agreement, descriptor_distances, linked, mutual_matches, verify_pair
from tests.conftest import photo_image, shared, sticker


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
    from filters.dedup.pair_verify import _overlap

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


KEYPOINTS_ONLY = replace(VerifyRules(), photometric=False)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_a_zoomed_crop_to_another_aspect_is_verified_by_its_pixels(index):
    """45 % of the width, whole height, enlarged 2x: the keypoints that agree fill too few cells of the
    original for the cells rule, the pixels over the part both show agree."""
    shared("images", "photos")  # verdicts of these real photos (generated pictures have other keypoints)
    image = photo_image(index)
    w, h = image.size
    part = w * 45 // 100
    copy = image.crop((w // 3, 0, w // 3 + part, h)).resize((2 * part, 2 * h), Image.Resampling.BICUBIC)
    fi, fc = _features(image), _features(copy)
    verdict = verify_pair(fi, fc)
    assert verdict.verified(VerifyRules()) and verdict.agreement >= VerifyRules().min_agreement
    assert verdict.cells < VerifyRules().min_cells and not verdict.verified(KEYPOINTS_ONLY)
    # the transform between the small copies: the copy's small copy shows its 2h rows in fc.size[1], the original's h in fi.size[1]
    expected = (fc.size[1] / (2 * h)) * 2 / (fi.size[1] / h)
    assert abs(verdict.scale / expected - 1) < 0.05


def test_a_copy_rotated_onto_a_filled_canvas_is_verified_by_its_pixels():
    shared("images", "photos")
    image = photo_image(2)
    copy = image.rotate(22, Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    verdict = verify_pair(_features(image), _features(copy))
    assert verdict.verified(VerifyRules()) and not verdict.verified(KEYPOINTS_ONLY)
    assert abs(abs(verdict.angle) - 22) < 2


def test_different_photos_under_one_banner_stay_apart_by_their_pixels_too():
    a, b = sticker(photo_image(2)), sticker(photo_image(3).resize(photo_image(2).size))
    verdict = verify_pair(_features(a), _features(b), replace(VerifyRules(), min_photometric_inliers=3))
    assert verdict.agreement is None or verdict.agreement < 0.5
    assert not verdict.verified(VerifyRules())


def test_block_agreement_counts_textured_blocks_that_correlate():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (32, 48)).astype(np.uint8)
    same = np.float64([[1, 0, 0], [0, 1, 0]])
    assert block_agreement(texture, texture, same) == (1.0, 1.0)
    other = rng.integers(0, 256, (32, 48)).astype(np.uint8)
    agreement, covered = block_agreement(texture, other, same)
    assert agreement < 0.2 and covered == 1.0
    flat = np.full((32, 48), 90, np.uint8)
    assert block_agreement(flat, flat, same)[0] == 0.0  # flat in both: says nothing, so nothing agrees
    half = np.float64([[1, 0, 24], [0, 1, 0]])  # shifted right by half the width: the left half is uncovered
    agreement, covered = block_agreement(texture, np.roll(texture, 24, axis=1), half)
    assert covered == 0.5 and agreement == 1.0
