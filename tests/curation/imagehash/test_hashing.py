"""curation.imagehash: exact mode equals imagehash.phash bit for bit; fast mode stays close."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

import curation.imagehash.robust as hashing_module
from curation.imagehash import (
    ASPECT_LENGTHS,
    ASPECT_PLACES,
    WINDOW_PLACES,
    WINDOW_SCALES,
    HashResult,
    KeyResult,
    PhashMode,
    UndecodableImage,
    dihedral_hashes,
    hamming,
    hashes_from_pixels,
    hex_to_int64,
    int64_to_hex,
    keys_many,
    phash,
    phash_image,
    phash_many,
    resize_gray_32,
    robust_key,
    robust_keys_from_pixels,
    trimmed_thumbnail,
    window_keys_from_pixels,
)
from tests.conftest import shared


def _imagehash(data: bytes) -> str | None:
    """The reference, exactly as the issue states it; None where Pillow cannot decode the bytes."""
    try:
        return str(imagehash.phash(Image.open(io.BytesIO(data))))
    except (OSError, ValueError, SyntaxError):
        return None


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(size=(96, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 2.0, y * 3.0, (x + y) * 1.5], -1) + rng.normal(0, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _shared_images() -> list:
    folders = [shared("images", "photos"), shared("images", "odd")]
    return sorted(p for folder in folders for p in folder.iterdir() if p.name != "FILES.md")


def test_exact_mode_equals_imagehash_on_every_real_photo_and_odd_file():
    files = _shared_images()
    assert len(files) >= 75
    results = phash_many([p.read_bytes() for p in files], PhashMode.EXACT)
    differ = [(p.name, r.phash, _imagehash(p.read_bytes())) for p, r in zip(files, results) if r.phash != _imagehash(p.read_bytes())]
    assert differ == []
    undecodable = {p.name for p, r in zip(files, results) if r.phash is None}
    assert {"skimage-truncated.jpg", "te-test_pdf_half.pdf", "imagededup-logo.svg"} <= undecodable


@pytest.mark.parametrize(
    "mode, size",
    [
        ("L", (80, 60)),
        ("P", (70, 50)),
        ("RGBA", (64, 90)),
        ("CMYK", (120, 40)),
        ("LA", (50, 50)),
        ("I;16", (45, 77)),
        ("1", (100, 30)),
        ("RGB", (1, 200)),  # 1xN
        ("RGB", (200, 1)),
        ("RGB", (3, 5)),  # upscaled to 32x32
        ("RGB", (32, 32)),  # no resampling at all
        ("RGB", (32, 500)),  # width already 32: vertical pass only
        ("RGB", (40, 300)),  # tall: Pillow 13 runs the vertical pass first
        ("RGB", (300, 40)),
        ("RGB", (2900, 60)),  # too wide for exact float32 products: the float64 path
    ],
)
def test_exact_mode_equals_imagehash_on_modes_and_shapes(mode, size):
    image = _photo(size).convert(mode)
    data = _encode(image, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    assert phash(data) == _imagehash(data)


def test_uniform_images_give_imagehash_s_noise_dependent_hash():
    # all AC coefficients of a uniform image are rounding noise: the bits come from scipy's noise,
    # which the exact mode reproduces by recomputing such images the way imagehash does
    for value in (0, 1, 128, 255):
        data = _encode(Image.new("L", (123, 77), value))
        assert phash(data) == _imagehash(data)


def test_resize_is_pillows_lanczos_bit_for_bit_in_every_pass_order():
    rng = np.random.default_rng(7)
    sizes = [(1, 1), (31, 33), (33, 31), (64, 200), (200, 64), (97, 163), (163, 97), (600, 1300), (1300, 600), (700, 700)]
    for width, height in sizes:
        gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(gray, "L").resize((32, 32), Image.Resampling.LANCZOS))
        assert np.array_equal(resize_gray_32(gray), expected), (width, height)


def test_batch_hashing_equals_one_at_a_time_and_keeps_order():
    images = [_encode(_photo(seed=i)) for i in range(5)]
    batch = phash_many(images[:2] + [b"not an image"] + images[2:])
    assert [r.phash for r in batch] == [phash(d) for d in images[:2]] + [None] + [phash(d) for d in images[2:]]
    assert batch[2].error


def test_undecodable_inputs_give_an_error_naming_the_cause_never_an_exception():
    jpeg = _encode(_photo((300, 200)), "JPEG")
    results = phash_many([None, b"", b"<html>not found</html>", jpeg[: len(jpeg) // 3]])
    assert [r.phash for r in results] == [None] * 4
    assert results[0].error == "no image bytes"
    assert results[1].error == "empty image bytes"
    assert "not an image format" in results[2].error
    assert "0x" not in results[2].error  # Pillow's message names a memory address: details must not vary
    assert "truncated" in results[3].error.lower()
    with pytest.raises(UndecodableImage, match="empty image bytes"):
        phash(b"")


def test_phash_image_takes_an_opened_image():
    image = _photo((150, 100))
    assert phash_image(image) == str(imagehash.phash(image))


def test_fast_mode_stays_within_two_bits_of_exact_on_real_jpegs():
    photos = [p for p in shared("images", "photos").iterdir() if p.suffix == ".jpg"]
    images = [p.read_bytes() for p in photos]
    exact = [r.phash for r in phash_many(images, PhashMode.EXACT)]
    fast = [r.phash for r in phash_many(images, PhashMode.FAST)]
    distances = [hamming(a, b) for a, b in zip(exact, fast)]
    assert max(distances) <= 2, dict(zip((p.name for p in photos), distances))
    assert fast != exact  # draft decoding really changes pixels: the two modes are different code paths


def test_fast_mode_of_other_formats_is_exact():
    data = _encode(_photo((400, 300)), "PNG")
    assert phash(data, "fast") == phash(data, "exact")


def test_hex_and_int64_round_trip_and_hamming():
    for h in ("0000000000000000", "ffffffffffffffff", "8000000000000000", "0123456789abcdef"):
        assert int64_to_hex(hex_to_int64(h)) == h
    assert hex_to_int64("ffffffffffffffff") == -1
    assert hamming("0000000000000000", "8000000000000003") == 3
    assert hamming(hex_to_int64("ffffffffffffffff"), 0) == 64
    with pytest.raises(ValueError, match="16 hex"):
        hex_to_int64("abc")


def test_hashes_from_pixels_of_an_empty_batch():
    assert hashes_from_pixels(np.zeros((0, 32, 32), np.uint8)) == []
    assert HashResult("0" * 16).error is None


# --- the robust dedup key -------------------------------------------------------------------------


ORIENTATIONS = [None, *Image.Transpose]  # upright and the 7 other rotations / flips
ROBUST_K = 4  # the sample config's near-duplicate distance


def _small_photo(name: str, side: int = 240) -> Image.Image:
    image = Image.open(shared("images", "photos", name)).convert("RGB")
    image.thumbnail((side, side))
    return image


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(v) for v in (a, a[:, ::-1], a[::-1], a[::-1, ::-1], a.T, a.T[:, ::-1], a.T[::-1], a.T[::-1, ::-1])]


def test_the_8_variants_from_one_dct_are_the_hashes_of_the_8_transformed_thumbnails():
    image = Image.open(shared("images", "photos", "skimage-astronaut.png"))
    thumb = resize_gray_32(np.asarray(image.convert("L")))
    variants = np.stack(_dihedral(thumb))
    from_one_dct = {f"{int(v):016x}" for v in dihedral_hashes(thumb[None])[0]}
    assert from_one_dct == set(hashes_from_pixels(variants))
    assert f"{int(dihedral_hashes(thumb[None])[0, 0]):016x}" == hashes_from_pixels(thumb[None])[0]
    assert len(set(robust_keys_from_pixels(variants))) == 1


@pytest.mark.parametrize("name", ["coco-val2017-000000397133.jpg", "skimage-chelsea.png"])
def test_every_orientation_and_flip_of_a_real_photo_matches_where_phash_does_not(name):
    image = _small_photo(name)
    files = [_encode(image if op is None else image.transpose(op), "JPEG", quality=90) for op in ORIENTATIONS]
    results = keys_many(files)
    upright = results[0]
    for op, r in zip(ORIENTATIONS[1:], results[1:]):
        assert hamming(r.key, upright.key) <= ROBUST_K, op
        assert hamming(r.phash, upright.phash) > 10, op  # what plain pHash sees: an unrelated image
        assert r.phash == _imagehash(files[ORIENTATIONS.index(op)])  # image_phash is still imagehash's


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_an_exif_rotated_file_matches_its_upright_copy(tag):
    image = _small_photo("skimage-coffee.png")
    stored = image.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[tag])
    exif = Image.Exif()
    exif[0x0112] = tag
    rotated = _encode(stored, "JPEG", quality=92, exif=exif)
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))).size == image.size
    upright = _encode(image, "JPEG", quality=92)
    a, b = keys_many([upright, rotated])
    assert hamming(a.key, b.key) <= ROBUST_K
    assert b.phash == _imagehash(rotated)  # the column stays imagehash's, which ignores the tag
    assert hamming(a.phash, b.phash) > 10


def test_blank_and_mostly_transparent_images_get_a_reason_and_no_key():
    uniform = _encode(Image.new("RGB", (300, 300), (40, 90, 200)), "PNG")
    speck = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    speck.paste((200, 30, 30, 255), (10, 10, 40, 40))  # 1 % of the pixels visible
    files = {
        "white jpeg": shared("images", "odd", "jimagehash-White.jpg").read_bytes(),
        "near-black jpeg": shared("images", "odd", "te-small.jpg").read_bytes(),
        "uniform png": uniform,
        "mostly transparent": _encode(speck, "PNG"),
    }
    results = dict(zip(files, keys_many(list(files.values()))))
    for name, r in results.items():
        assert r.phash is not None and r.key is None and r.blank, name
    assert "visible" in results["mostly transparent"].blank
    assert "near-uniform" in results["white jpeg"].blank
    photo = keys_many([shared("images", "photos", "skimage-camera.png").read_bytes()])[0]
    assert photo.blank is None and photo.key is not None
    assert keys_many([uniform], blank_std=0.0, blank_min_alpha=0.0)[0].key is not None  # thresholds are configurable


def test_alpha_is_composited_so_two_transparent_logos_differ_and_a_logo_matches_its_white_copy():
    logos = [shared("images", "odd", f"jimagehash-transparent{i}.png").read_bytes() for i in (0, 1)]
    on_white = []
    for data in logos:
        rgba = Image.open(io.BytesIO(data)).convert("RGBA")
        on_white.append(_encode(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"), "PNG"))
    t0, t1, w0, w1 = keys_many(logos + on_white)
    assert t0.phash == t1.phash  # imagehash sees two all-black images (the collision)
    assert t0.blank is None and t1.blank is None
    assert hamming(t0.key, t1.key) > 3 * ROBUST_K
    assert hamming(t0.key, w0.key) <= 1 and hamming(t1.key, w1.key) <= 1


def test_robust_key_raises_on_undecodable_bytes_and_batches_keep_order():
    with pytest.raises(UndecodableImage):
        robust_key(b"not an image")
    good = _encode(_small_photo("skimage-camera.png", 96), "PNG")
    out = keys_many([good, None, b"junk", good])
    assert [r.phash is None for r in out] == [False, True, True, False]
    assert out[0] == out[3] and isinstance(out[1], KeyResult) and out[1].error


def _crop(image: Image.Image, area: float, place: str) -> Image.Image:
    """A crop removing ``area`` of the pixels, kept at a corner or the centre."""
    w, h = image.size
    cw, ch = round(w * (1 - area) ** 0.5), round(h * (1 - area) ** 0.5)
    x = {"left": 0, "right": w - cw, "centre": (w - cw) // 2}[place.split("-")[-1]]
    y = {"top": 0, "bottom": h - ch, "centre": (h - ch) // 2}[place.split("-")[0]]
    return image.crop((x, y, x + cw, y + ch))


def test_cropped_copies_match_a_window_of_the_original_where_the_full_keys_do_not():
    """Crops of 5 % and 10 % of the area at each corner and the centre of four real photos (40 copies):
    at least 90 % are within k of one of the original's window keys."""
    places = ["top-left", "top-right", "bottom-left", "bottom-right", "centre-centre"]
    via_windows = via_key = total = 0
    for name in ["coco-val2017-000000397133.jpg", "skimage-coffee.png", "skimage-chelsea.png", "skimage-astronaut.png"]:
        image = _small_photo(name, 320)
        crops = [_encode(_crop(image, area, p), "JPEG", quality=90) for area in (0.05, 0.10) for p in places]
        original, *copies = keys_many([_encode(image, "JPEG", quality=90), *crops])
        assert len(original.windows) == len(WINDOW_SCALES) * len(WINDOW_PLACES)
        via_windows += sum(min(hamming(c.key, w) for w in original.windows) <= ROBUST_K for c in copies)
        via_key += sum(hamming(c.key, original.key) <= ROBUST_K for c in copies)
        total += len(copies)
    assert via_windows >= 0.9 * total, (via_windows, total)
    assert via_key < 0.75 * total, (via_key, total)  # the full keys alone miss many crops


def test_window_keys_are_the_same_set_for_every_orientation():
    thumb = resize_gray_32(np.asarray(_small_photo("skimage-astronaut.png").convert("L")))
    per_variant = window_keys_from_pixels(np.stack(_dihedral(thumb)))
    assert all(set(w) == set(per_variant[0]) for w in per_variant)
    assert window_keys_from_pixels(np.zeros((0, 32, 32), np.uint8)) == []


def test_blank_images_have_no_window_keys():
    white = _encode(Image.new("RGB", (200, 200), "white"), "PNG")
    assert keys_many([white])[0].windows == ()


# --- aspect windows, border trimming, one BLAS thread ----------------------------------------------

N_CROP = len(WINDOW_SCALES) * len(WINDOW_PLACES)
N_ASPECT = 2 * len(ASPECT_LENGTHS) * len(ASPECT_PLACES)
EDITED_PHOTOS = ["coco-val2017-000000397133.jpg", "skimage-coffee.png", "skimage-chelsea.png", "skimage-astronaut.png"]


def _strip(image: Image.Image, side: str, frac: float) -> Image.Image:
    w, h = image.size
    return image.crop({"top": (0, round(h * frac), w, h), "bottom": (0, 0, w, h - round(h * frac)),
                       "left": (round(w * frac), 0, w, h), "right": (0, 0, w - round(w * frac), h)}[side])


def _bars(image: Image.Image, frac: float, fill) -> Image.Image:
    w, h = image.size
    canvas = Image.new("RGB", (w, round(h / (1 - frac))), fill)
    canvas.paste(image, (0, (canvas.size[1] - h) // 2))
    return canvas


def test_aspect_windows_catch_one_side_strip_crops_and_are_off_by_default():
    hits = total = 0
    for name in EDITED_PHOTOS:
        image = _small_photo(name, 320)
        copies = [_encode(_strip(image, side, frac), "JPEG", quality=90) for side in ("top", "left", "bottom") for frac in (0.08, 0.15)]
        original, *crops = keys_many([_encode(image, "JPEG", quality=90), *copies], aspect_windows=True)
        assert len(original.windows) == N_CROP + N_ASPECT
        hits += sum(min(hamming(c.key, w) for w in original.windows) <= ROBUST_K for c in crops)
        total += len(crops)
    assert hits >= 0.8 * total, (hits, total)
    assert len(keys_many([_encode(_small_photo(EDITED_PHOTOS[0], 320), "JPEG")])[0].windows) == N_CROP  # default: crop windows only


def test_trimmed_key_of_a_letterboxed_copy_is_the_original_key():
    for name in EDITED_PHOTOS:
        image = _small_photo(name, 320)
        for fill in ("black", "white"):
            boxed = _encode(_bars(image, 0.3, fill), "JPEG", quality=90)
            original, copy = keys_many([_encode(image, "JPEG", quality=90), boxed], trim_borders=True)
            assert len(original.windows) == N_CROP  # no bars: no trimmed key
            assert len(copy.windows) == N_CROP + 1, (name, fill)
            assert hamming(copy.windows[-1], original.key) <= ROBUST_K, (name, fill)
            assert hamming(copy.key, original.key) > ROBUST_K or name == "skimage-coffee.png"  # the full key alone misses


def test_no_bars_found_on_the_real_photos():
    for path in sorted(shared("images", "photos").iterdir()):
        gray = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"))
        assert trimmed_thumbnail(gray) is None, path.name


def test_hashing_holds_blas_to_one_thread_and_restores_the_callers_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    def numpy_blas() -> list[int]:  # the BLAS numpy's matrix products use (scipy may load its own)
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]

    seen: list[int] = []
    with threadpool_limits(2, "blas"):
        before = numpy_blas()
        original = hashing_module.resize_gray_32

        def spy(gray):
            seen.extend(numpy_blas())
            return original(gray)

        hashing_module.resize_gray_32 = spy
        try:
            keys_many([_encode(_small_photo(EDITED_PHOTOS[0], 64), "PNG")])
        finally:
            hashing_module.resize_gray_32 = original
        after = numpy_blas()
    assert seen and set(seen) == {1}
    assert after == before


def test_the_dedup_rules_choose_the_windows_the_stage_hashes():
    import pyarrow as pa

    from jobs.stages.dedup import hash_images
    from filters.dedup import KeyRules

    boxed = _encode(_bars(_small_photo(EDITED_PHOTOS[0], 320), 0.3, "black"), "JPEG", quality=90)
    column = pa.array([boxed], pa.binary())
    assert len(hash_images(column, KeyRules())[0].windows) == N_CROP
    assert len(hash_images(column, KeyRules(aspect_windows=True, trim_borders=True))[0].windows) == N_CROP + N_ASPECT + 1
