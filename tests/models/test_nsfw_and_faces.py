"""NSFW scorers (nudenet's shipped detector; opennsfw2/GantMan ONNX when configured) and face counts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.base import ImageTextBatch, MissingWeightsError
from models.faces import FacesSpec, HaarFaceCounter
from models.images import decode_rgb, image_views, stack_views
from models.nsfw import NudenetScorer, NudenetSpec, OnnxNsfwScorer, OnnxSpec
from tests.conftest import shared


def _batch(images: list[bytes], views) -> ImageTextBatch:
    per_image = [image_views(decode_rgb(p), views) for p in images]
    return ImageTextBatch(texts=["x"] * len(images), views=stack_views(per_image, views))


def _tiny_onnx_classifier(path, classes: int, size: int) -> str:
    """A small conv net with the Keras exports' interface: NHWC float input, softmax probabilities."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4, classes)

        def forward(self, x):
            h = self.conv(x.permute(0, 3, 1, 2)).mean(dim=(2, 3))
            return torch.softmax(self.fc(h), dim=-1)

    torch.manual_seed(classes)
    torch.onnx.export(
        Net().eval(), (torch.zeros(1, size, size, 3),), str(path), dynamo=False,
        input_names=["input"], output_names=["probs"], dynamic_axes={"input": {0: "n"}, "probs": {0: "n"}},
    )  # fmt: skip
    return str(path)


def test_nudenet_default_gives_probabilities_independent_of_batching(photos):
    scorer = NudenetScorer("nsfw_nudenet", NudenetSpec())
    scorer.load("cpu")
    together = scorer.score(_batch(photos, scorer.views))["nsfw_score_nudenet"]
    alone = np.concatenate([scorer.score(_batch([p], scorer.views))["nsfw_score_nudenet"] for p in photos])
    assert together.dtype == np.float32 and np.all((together >= 0) & (together <= 1))
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_nudenet_input_equals_what_nudenet_feeds_its_model_for_a_file(photos, tmp_path, monkeypatch):
    from nudenet import NudeDetector

    path = tmp_path / "photo.jpg"
    path.write_bytes(photos[0])
    fed = []
    detector = NudeDetector()
    real_run = detector.onnx_session.run
    monkeypatch.setattr(detector.onnx_session, "run", lambda out, feed: fed.append(next(iter(feed.values()))) or real_run(out, feed))
    detector.detect(str(path))
    scorer = NudenetScorer("nsfw_nudenet", NudenetSpec())
    scorer.load("cpu")
    captured = []
    own = scorer.session

    class Spy:  # the scorer's session, recording what it is fed
        def __getattr__(self, name):
            return getattr(own, name)

        def run(self, out, feed):
            captured.append(feed[scorer.input_name])
            return own.run(out, feed)

    scorer.session = Spy()
    scorer.score(_batch([photos[0]], scorer.views))
    np.testing.assert_allclose(captured[0], fed[0], atol=1e-6)


@pytest.mark.parametrize("preset,classes,size", [("opennsfw2", 2, 224), ("gantman", 5, 224)])
def test_configured_onnx_nsfw_models_score_the_right_classes(tmp_path, photos, preset, classes, size):
    import onnxruntime as ort

    path = _tiny_onnx_classifier(tmp_path / f"{preset}.onnx", classes, size)
    scorer = OnnxNsfwScorer(f"nsfw_{preset}", preset, OnnxSpec(path))
    scorer.load("cpu")
    batch = _batch(photos, scorer.views)
    score = scorer.score(batch)[f"nsfw_score_{preset}"]
    probs = ort.InferenceSession(path).run(None, {"input": scorer.preprocess(batch.view(scorer.views[0]))})[0]
    expected = probs[:, 1] if preset == "opennsfw2" else probs[:, [1, 3, 4]].sum(axis=1)
    np.testing.assert_allclose(score, expected, rtol=1e-6)
    assert np.all((score >= 0) & (score <= 1))


def test_opennsfw2_preprocessing_is_bgr_mean_subtracted_center_224():
    scorer = OnnxNsfwScorer("nsfw_opennsfw2", "opennsfw2", OnnxSpec("unused.onnx"))
    scorer.nhwc = True
    pixels = np.zeros((1, 256, 256, 3), np.uint8)
    pixels[..., 0] = 200  # red
    x = scorer.preprocess(pixels)
    assert x.shape == (1, 224, 224, 3)
    assert x[0, 0, 0].tolist() == [0 - 104.0, 0 - 117.0, 200 - 123.0]


def test_missing_onnx_file_names_the_model_and_the_path(tmp_path):
    scorer = OnnxNsfwScorer("nsfw_gantman", "gantman", OnnxSpec(str(tmp_path / "nope.onnx")))
    with pytest.raises(MissingWeightsError, match=r"'nsfw_gantman'.*nope\.onnx"):
        scorer.load("cpu")


def _png(name: str) -> bytes:
    img = Image.open(shared("images", "photos", name)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_haar_counts_the_astronauts_face_and_none_in_textures():
    counter = HaarFaceCounter("faces", FacesSpec())
    counter.load("cpu")
    images = [_png("skimage-astronaut.png"), _png("skimage-brick.png"), _png("skimage-moon.png")]
    counts = counter.score(_batch(images, counter.views))["num_faces"]
    assert counts.dtype == np.int32 and counts.tolist() == [1, 0, 0]


def test_gantman_input_is_keras_load_img_nearest_224_over_255(photos):
    """GantMan's predict.py: keras load_img(target_size=(224, 224)) (PIL, nearest) then / 255."""
    scorer = OnnxNsfwScorer("nsfw_gantman", "gantman", OnnxSpec("unused.onnx"))
    scorer.nhwc = True
    img = decode_rgb(photos[0])
    expected = np.asarray(img.resize((224, 224), Image.NEAREST), dtype=np.float32) / 255.0
    got = scorer.preprocess(image_views(img, scorer.views)[scorer.views[0]][None])[0]
    np.testing.assert_array_equal(got, expected)
