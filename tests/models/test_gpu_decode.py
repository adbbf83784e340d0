"""JPEG decoding and views on the device (models.gpu_decode): the same views as the CPU path within a
few grey levels, CPU fallback for other formats, and, where a GPU exists, scores within fp16 tolerance
of the CPU path. The device code runs on CPU tensors everywhere; the CUDA test needs a GPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.base import ViewSpec
from models.gpu_decode import decode_batch, gpu_decodable
from models.images import decode_rgb, image_views

VIEWS = (ViewSpec("center_crop", 224), ViewSpec("stretch", 256), ViewSpec("stretch_nearest", 224), ViewSpec("letterbox", 320), ViewSpec("gray"))


def _png(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "PNG")
    return buf.getvalue()


def test_device_views_match_the_cpu_views_within_a_few_levels(photos):
    got = decode_batch(photos, VIEWS, "cpu")
    for data, (views, size) in zip(photos, got, strict=True):
        img = decode_rgb(data)
        assert size == img.size
        expected = image_views(img, VIEWS)
        for spec in VIEWS:
            a = views[spec] if isinstance(views[spec], np.ndarray) else views[spec].numpy()
            b = expected[spec]
            assert a.shape == b.shape, spec
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            # different resampling kernels (torch vs PIL / OpenCV): small on average, never a shifted crop
            assert diff.mean() < 2.0, (spec, diff.mean())
            if spec.kind != "stretch_nearest":  # nearest: a rounding tie picks the neighbouring pixel
                assert np.percentile(diff, 99) <= 12, (spec, np.percentile(diff, 99))


def test_other_formats_and_broken_files_take_the_cpu_path(photos):
    png = _png(photos[0])
    images = [photos[0], png, b"<html>not an image</html>", photos[1][:300], None]
    assert gpu_decodable(photos[0]) and not gpu_decodable(png) and not gpu_decodable(None)
    got = decode_batch(images, VIEWS, "cpu")
    assert isinstance(got[0][0][VIEWS[0]], torch.Tensor)  # decoded by torchvision
    assert isinstance(got[1][0][VIEWS[0]], np.ndarray)  # PNG: Pillow
    np.testing.assert_array_equal(got[1][0][VIEWS[0]], image_views(decode_rgb(png), VIEWS)[VIEWS[0]])
    assert got[2] == "not a known image format" and isinstance(got[3], str) and got[4] == "no image bytes"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decoded_scores_stay_within_fp16_tolerance_of_the_cpu_path(tiny_models, photos):
    from models.runner import AnnotationRunner, RunOptions

    texts = ["a dog on a beach", "a city street", "a bowl of fruit", "a red car", "coffee", "people"][: len(photos)]
    images = photos + [_png(photos[0])]  # one PNG: the CPU fallback inside a GPU batch
    texts = texts + ["a png"]
    cpu = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4)).score(images, texts)
    gpu_runner = AnnotationRunner(tiny_models, RunOptions(device="cuda", batch_size=4, gpu_decode=True))
    gpu = gpu_runner.score(images, texts)
    assert gpu_runner.decodes_on_gpu
    assert gpu.ok.tolist() == cpu.ok.tolist()
    for col in ("clip_similarity_vitb32", "clip_similarity_vitl14", "watermark_score", "aesthetic_score_laion_v2"):
        np.testing.assert_allclose(gpu.columns[col], cpu.columns[col], atol=2e-2, err_msg=col)
    np.testing.assert_allclose(gpu.columns["nsfw_score_nudenet"], cpu.columns["nsfw_score_nudenet"], atol=0.1)
    assert np.sum(gpu.columns["num_faces"] != cpu.columns["num_faces"]) <= 1
    np.testing.assert_array_equal(gpu.columns["num_tokens_bert"], cpu.columns["num_tokens_bert"])
