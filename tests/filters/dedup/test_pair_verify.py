"""Verification of near-duplicate candidate pairs with ORB + RANSAC (filters/dedup/pair_verify.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from curation.imagehash.keypoints import EMPTY, LocalFeatures, features_from_gray
from filters.dedup.pair_verify import (
    Verdict,
    VerifyRules,
    block_agreement,
    descriptor_distances,
    linked,
    mutual_matches,
    photometric_agreement,
    verify_pair,
)
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


KEYPOINT_RULES = VerifyRules(min_inliers=10, min_cells=7, photometric=False)


def _verdict(inliers: int, cells: int, agreement: float | None = None) -> Verdict:
    return Verdict(matches=inliers + 5, inliers=inliers, scale=1.0, angle=0.0, support=1.0, cells=cells, agreement=agreement)


def test_a_pair_with_exactly_min_cells_agreeing_cells_verifies():
    assert _verdict(inliers=12, cells=7).verified(KEYPOINT_RULES)
    assert not _verdict(inliers=12, cells=6).verified(KEYPOINT_RULES)


def test_a_pair_with_exactly_min_inliers_agreeing_matches_verifies():
    assert _verdict(inliers=10, cells=9).verified(KEYPOINT_RULES)
    assert not _verdict(inliers=9, cells=9).verified(KEYPOINT_RULES)


def test_a_pair_whose_pixels_agree_on_exactly_min_agreement_verifies():
    rules = VerifyRules(min_inliers=10, min_cells=7, photometric=True, min_agreement=0.5)
    assert _verdict(inliers=6, cells=2, agreement=0.5).verified(rules)
    assert not _verdict(inliers=6, cells=2, agreement=0.49).verified(rules)
    assert not _verdict(inliers=6, cells=2, agreement=0.5).verified(replace(rules, photometric=False))


def _thumb_features(thumb: np.ndarray) -> LocalFeatures:
    """No keypoints, the tiny copy only; the small copy's size is the tiny copy's, so maps between them are the identity."""
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), (thumb.shape[1], thumb.shape[0]), thumb)


def test_pixels_that_agree_one_way_only_count_the_direction_that_agrees_less():
    """b shows a shifted right by 4 pixels (b[:, x + 4] = a[:, x]) except b[:, 4:8], the inverse of a[:, 0:4].
    a onto b covers b's blocks 1..3 (a[:, 4:28]): all three agree. b onto a covers a's blocks 0..2 (a[:, 0:24]):
    block 0 holds the inverted columns, half correlated and half anti-correlated, so 2 of 3 agree."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 32)).astype(np.uint8)
    b = rng.integers(0, 256, (8, 32)).astype(np.uint8)
    b[:, 4:32] = a[:, 0:28]
    b[:, 4:8] = 255 - a[:, 0:4]
    a_to_b, b_to_a = np.float64([[1, 0, 4], [0, 1, 0]]), np.float64([[1, 0, -4], [0, 1, 0]])
    assert block_agreement(a, b, a_to_b) == (1.0, 0.75)
    assert block_agreement(b, a, b_to_a) == (pytest.approx(2 / 3), 0.75)
    fa, fb = _thumb_features(a), _thumb_features(b)
    assert photometric_agreement(fa, fb, a_to_b, min_overlap=0.1) == pytest.approx(2 / 3)
    assert photometric_agreement(fb, fa, b_to_a, min_overlap=0.1) == pytest.approx(2 / 3)
    assert photometric_agreement(fa, fb, a_to_b, min_overlap=0.8) == 0.0  # each direction covers 0.75 of its picture
