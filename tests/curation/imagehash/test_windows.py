"""Rotated and deep aspect window keys (curation/imagehash/windows.py): pure functions on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from curation.imagehash.windows import (
    DEEP_MAX_LENGTH,
    DEEP_MIN_LENGTH,
    DEEP_STEP,
    TARGET_ASPECTS,
    ROTATION_ANGLES,
    deep_aspect_keys,
    deep_aspect_thumbnails,
    deep_lengths,
    deep_places,
    inscribed_scale,
    rotated_from_thumbnail,
    rotated_window_keys,
    rotated_window_keys_many,
    rotated_windows_many,
    rotation_maps,
    unrotated_extent,
)
from curation.imagehash import hamming, resize_gray_32, robust_keys_from_pixels
from tests.conftest import photo_image, shared


def _key(image: Image.Image) -> str:
    return robust_keys_from_pixels(resize_gray_32(np.asarray(image.convert("L")))[None])[0]


def _thumb(image: Image.Image) -> tuple[np.ndarray, int, int]:
    return resize_gray_32(np.asarray(image.convert("L"))), image.width, image.height


def test_unrotated_extent_inverts_the_expanded_canvas_of_a_turn():
    w, h, angle = 640.0, 480.0, 17.0
    a = np.radians(angle)
    canvas = (w * np.cos(a) + h * np.sin(a), w * np.sin(a) + h * np.cos(a))
    assert unrotated_extent(*canvas, angle) == pytest.approx((w, h))
    assert unrotated_extent(*canvas, -angle) == pytest.approx((w, h))


def test_unrotated_extent_is_none_when_no_picture_fits():
    assert unrotated_extent(100, 100, 45.0) is None


def test_inscribed_scale_is_one_without_a_turn_and_shrinks_with_it():
    assert inscribed_scale(640, 480, 0.0) == pytest.approx(1.0)
    assert inscribed_scale(640, 480, 10.0) > inscribed_scale(640, 480, 25.0) > 0.4


def test_four_windows_per_angle():
    thumb, w, h = _thumb(photo_image())
    assert rotated_from_thumbnail(thumb, w, h).shape == (4 * len(ROTATION_ANGLES), 32, 32)
    assert len(rotated_window_keys(thumb, w, h)) == 4 * len(ROTATION_ANGLES)


@pytest.mark.parametrize("angle", [9.0, -12.0, 21.0])
def test_original_window_matches_its_rotated_and_cropped_copy(angle):
    image = photo_image()
    w, h = image.size
    s = inscribed_scale(w, h, angle)
    cw, ch = round(w * s), round(h * s)
    turned = image.rotate(angle, Image.Resampling.BICUBIC)
    copy = turned.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    windows = rotated_window_keys(*_thumb(image))
    best = min(hamming(_key(copy), k) for k in windows)
    assert best <= 4
    assert hamming(_key(copy), _key(image)) > best  # the windows are what links it


@pytest.mark.parametrize("angle", [9.0, -18.0])
def test_filled_copy_window_matches_the_original(angle):
    # (at 24 degrees and more the picture holds ~20 of the filled copy's 32 thumbnail pixels per axis:
    # the window key then drifts to 5-7 bits on some photos; the bench measures the whole range)
    shared("images", "photos")  # distances calibrated on the real photos (generated ones are smoother)
    image = photo_image(1)
    copy = image.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    windows = rotated_window_keys(*_thumb(copy))
    assert min(hamming(_key(image), k) for k in windows) <= 4


def test_deep_lengths_are_the_crops_to_common_aspect_ratios():
    lengths = deep_lengths(640, 480)  # 4:3
    assert (1, 0.75) in lengths and (1, round(9 / 16 / (4 / 3), 2)) in lengths  # 1:1 and 9:16 keep 75 % and 42 % of the width
    assert (0, 0.75) in lengths  # 16:9 keeps 75 % of the height
    assert all(length < DEEP_MAX_LENGTH for _, length in lengths) and len(lengths) == len(set(lengths)) == 8
    assert {(1 - axis, length) for axis, length in deep_lengths(480, 640)} == set(lengths)  # turned 90 degrees: the other axis
    assert len(deep_lengths(1000, 1000)) == 8 and len(deep_lengths(2000, 1000)) == 7  # 1:2 (25 %) is under DEEP_MIN_LENGTH
    assert all(DEEP_MIN_LENGTH <= length for _, length in deep_lengths(4000, 1000))
    assert deep_lengths(0, 10) == ()


def test_short_windows_get_more_places_at_most_deep_step_of_their_length_apart():
    for length in (0.3, 0.42, 0.5, 0.75):
        places = deep_places(length)
        assert places[0] == 0.0 and places[-1] == 1.0
        assert (places[1] - places[0]) * (1 - length) <= DEEP_STEP * length + 1e-9
    assert len(deep_places(0.375)) > len(deep_places(0.75))
    assert len(TARGET_ASPECTS) == 11


@pytest.mark.parametrize("aspect, place", [(1.0, 0.3), (9 / 16, 0.8), (2.0, 0.2), (4 / 5, 0.65)])
def test_deep_aspect_window_matches_a_crop_to_a_common_aspect_ratio(aspect, place):
    shared("images", "photos")  # distances calibrated on the real photos
    image = photo_image(0)
    w, h = image.size
    cw, ch = (round(h * aspect), h) if aspect < w / h else (w, round(w / aspect))
    x, y = round((w - cw) * place), round((h - ch) * place)
    copy = image.crop((x, y, x + cw, y + ch)).resize((cw * 600 // max(cw, ch), ch * 600 // max(cw, ch)), Image.Resampling.BICUBIC)
    thumb = _thumb(image)[0]
    assert deep_aspect_thumbnails(thumb, w, h).shape == (sum(len(deep_places(length)) for _, length in deep_lengths(w, h)), 32, 32)
    (original,) = deep_aspect_keys(thumb[None], [(w, h)])
    assert min(hamming(_key(copy), k) for k in original) <= 4
    assert hamming(_key(copy), _key(image)) > 12


def test_deep_aspect_keys_equal_the_keys_of_the_window_pixels():
    images = [photo_image(i) for i in range(3)] + [photo_image(3).resize((400, 200))]
    thumbs = np.stack([_thumb(im)[0] for im in images])
    sizes = [im.size for im in images]
    got = deep_aspect_keys(thumbs, sizes)
    pairs = []
    for t, (w, h), keys in zip(thumbs, sizes, got):
        expected = robust_keys_from_pixels(deep_aspect_thumbnails(t, w, h))
        assert len(keys) == len(expected) == sum(len(deep_places(length)) for _, length in deep_lengths(w, h))
        pairs += list(zip(expected, keys))
    assert max(hamming(a, b) for a, b in pairs) <= 1  # median ties only
    assert sum(a == b for a, b in pairs) >= 0.97 * len(pairs)


def test_deep_window_matrices_are_shared_by_pictures_of_every_size():
    """Web images come in many sizes: the deep windows' matrices are cached per band (axis, length), so 300
    different sizes build at most 2 x 51 of them, and each picture's windows are still those of its own
    lengths (the batched keys equal those of its windows' pixels, computed one picture at a time)."""
    from curation.imagehash import windows as hash_windows

    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(120, 2400)), int(rng.integers(120, 2400))) for _ in range(300)]
    thumbs = rng.integers(0, 256, (len(sizes), 32, 32)).astype(np.uint8)
    hash_windows._deep_band.cache_clear()
    got = deep_aspect_keys(thumbs, sizes)
    bands = {band for w, h in sizes for band in deep_lengths(w, h)}
    assert hash_windows._deep_band.cache_info().currsize == len(bands) <= 2 * 51
    assert len({deep_lengths(w, h) for w, h in sizes}) > len(bands)  # more length sets than bands: shared
    for i in range(0, len(sizes), 37):
        w, h = sizes[i]
        expected = robust_keys_from_pixels(deep_aspect_thumbnails(thumbs[i], w, h))
        assert len(got[i]) == len(expected)
        assert sum(a == b for a, b in zip(expected, got[i])) >= 0.97 * len(expected)  # median ties aside


def test_occlusion_windows_of_a_copy_with_a_caption_band_match_the_originals():
    from PIL import ImageDraw

    from curation.imagehash.windows import MASKED_CENTRES, OCCLUSION_LENGTHS, occlusion_keys

    key_moves = []
    for i in range(6):
        image = photo_image(i)
        copy = image.copy()
        w, h = copy.size
        ImageDraw.Draw(copy).rectangle((0, int(h * 0.75), w, h), fill=(220, 30, 40))
        original, covered = occlusion_keys(np.stack([_thumb(image)[0], _thumb(copy)[0]]))
        assert len(original) == 2 * 2 * len(OCCLUSION_LENGTHS) + len(MASKED_CENTRES)
        assert min(hamming(a, b) for a in original for b in covered) <= 3  # the top bands stay
        key_moves.append(hamming(_key(image), _key(copy)))
    assert max(key_moves) > 6  # while the band moves the whole key on some photos


def test_masked_centres_of_a_copy_with_a_sticker_in_the_middle_match_the_originals():
    from PIL import ImageDraw

    from curation.imagehash.windows import MASKED_CENTRES, masked_centres, occlusion_keys

    thumbs = np.random.default_rng(1).integers(0, 256, (2, 32, 32)).astype(np.uint8)
    masked = masked_centres(thumbs)
    assert masked.shape == (2, len(MASKED_CENTRES), 32, 32)
    assert [int((masked[0, j] != thumbs[0]).sum()) for j in range(len(MASKED_CENTRES))] == [100, 196, 400]  # 10, 14, 20 px squares
    shared("images", "photos")  # the figures below are those of the real photos
    for i in range(6):
        image = photo_image(i)
        w, h = image.size
        copy = image.copy()  # a yellow disc over ~11 % of the picture, in its middle
        ImageDraw.Draw(copy).ellipse((int(w * 0.3), int(h * 0.32), int(w * 0.7), int(h * 0.68)), fill=(250, 200, 0))
        original, edited = occlusion_keys(np.stack([_thumb(image)[0], _thumb(copy)[0]]))
        centres = min(hamming(a, b) for a, b in zip(original[-len(MASKED_CENTRES):], edited[-len(MASKED_CENTRES):]))
        assert centres <= 2
        if i in (0, 3):  # here the whole key and every side band moved by 10 or more bits
            assert hamming(_key(image), _key(copy)) >= 10
            assert min(hamming(a, b) for a in original[:12] for b in edited[:12]) >= 10


def _grid_map_reference(size, thumb, angle, box):
    """The per-window map in plain Python floats, one window at a time: the reference for the batched rotation_maps."""
    (w, h), (bw, bh) = size, box
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    sx, sy = thumb / w, thumb / h
    du, dv = bw / 32, bh / 32
    x0, y0 = -bw / 2 + du / 2, -bh / 2 + dv / 2
    return [
        [sx * c * du, sx * s * dv, sx * (c * x0 + s * y0 + w / 2) - 0.5],
        [-sy * s * du, sy * c * dv, sy * (-s * x0 + c * y0 + h / 2) - 0.5],
    ]


def _maps_reference(w, h):
    out = []
    for a in ROTATION_ANGLES:
        for signed in (a, -a):
            r = math.radians(abs(signed))
            scale = 1.0 / (math.cos(r) + math.sin(r) * max(w / h, h / w))
            crop = _grid_map_reference((w, h), 32, signed, (w * scale, h * scale))
            extent = unrotated_extent(w, h, signed)
            out += [crop, crop if extent is None else _grid_map_reference((w, h), 32, -signed, extent)]
    return np.array(out)


def _sizes_and_thumbs(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = [(1, 1), (1, 4000), (4000, 3), (100, 100), (640, 480), (32, 32)] + [tuple(int(v) for v in rng.integers(5, 5000, 2)) for _ in range(count)]
    return sizes, rng.integers(0, 256, (len(sizes), 32, 32), np.uint8)


def test_batched_rotation_maps_equal_the_per_window_maps():
    sizes, _ = _sizes_and_thumbs(40)
    maps = rotation_maps(sizes)
    for (w, h), m in zip(sizes, maps):
        assert np.array_equal(m, _maps_reference(w, h))


def test_batched_rotated_windows_equal_one_warp_affine_per_window():
    sizes, thumbs = _sizes_and_thumbs(200)
    photos = [photo_image(i) for i in range(4)]
    sizes += [p.size for p in photos]
    thumbs = np.concatenate([thumbs, np.stack([_thumb(p)[0] for p in photos])])
    windows = rotated_windows_many(thumbs, sizes)
    for t, (w, h), got in zip(thumbs, sizes, windows):
        assert np.array_equal(got, rotated_from_thumbnail(t, w, h))
    keys = rotated_window_keys_many(thumbs, sizes)
    assert keys == [tuple(robust_keys_from_pixels(w)) for w in windows]
    assert keys[-1] == rotated_window_keys(thumbs[-1], *sizes[-1])
    assert rotated_window_keys_many(np.zeros((0, 32, 32), np.uint8), []) == []
