"""Every model score column equals what the anchor's own reference inference code computes, on real
photos and the same random checkpoints (within 1e-5).

The references are written the way each anchor's published inference code does it, and load the
checkpoint files with the anchor's own loader, never with ours:
- CLIP: open_clip's ``create_model_and_transforms(pretrained=<file>)``, its eval transform on the PIL
  image, ``encode_image`` / ``encode_text`` with open_clip's tokenizer, cosine of the normalised embeddings;
- aesthetic v2: improved-aesthetic-predictor's ``simple_inference.py``: the MLP (768-1024-128-64-16-1 with
  its dropouts) on ``normalized(encode_image(...))`` of the ViT-L/14 model;
- watermark: LAION-5B-WatermarkDetection's ``example_use.py``: timm efficientnet with the
  1536-625-256-2 classifier, ``T.Resize((256, 256))``, ``ToTensor``, ImageNet ``Normalize``,
  ``softmax(pred, dim=1)[:, 0]``;
- nudenet: ``NudeDetector().detect(path)`` on the photo file.
These pin what type-and-range tests cannot: a flipped watermark class, a wrong normalisation mean or a
bilinear instead of bicubic crop each fail here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.runner import AnnotationRunner, RunOptions
from tests.conftest import SHARED_DATA

TEXTS = ["a dog on a beach", "two people riding bicycles in the city at night", "a bowl of fruit", "a red car", "coffee", "a photo of the moon over the sea, very detailed, 4k"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def scored(tiny_models, photos):
    return AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4, decode_workers=2)).score(photos, TEXTS[: len(photos)])


def _pil(photos) -> list[Image.Image]:
    return [Image.open(io.BytesIO(p)) for p in photos]


def _reference_clip(spec):
    """open_clip's own model, transform and tokenizer for a ClipSpec (a .json config or a built-in name)."""
    import open_clip

    name = spec.arch
    if spec.arch.endswith(".json"):
        open_clip.add_model_config(spec.arch)
        name = Path(spec.arch).stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=spec.weights, force_quick_gelu=spec.quick_gelu)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def _reference_similarity_and_embedding(spec, photos, texts):
    model, preprocess, tokenizer = _reference_clip(spec)
    with torch.no_grad():
        images = torch.stack([preprocess(img) for img in _pil(photos)])
        image_features = model.encode_image(images)
        text_features = model.encode_text(tokenizer(texts))
    sim = torch.nn.functional.normalize(image_features, dim=-1) @ torch.nn.functional.normalize(text_features, dim=-1).T
    return sim.diagonal().numpy(), image_features.numpy()


@pytest.mark.parametrize("section", ["clip_vitb32", "clip_vitl14"])
def test_clip_similarity_equals_open_clips_own_inference(tiny_models, photos, scored, section):
    expected, _ = _reference_similarity_and_embedding(getattr(tiny_models, section), photos, TEXTS[: len(photos)])
    column = "clip_similarity_vitb32" if section == "clip_vitb32" else "clip_similarity_vitl14"
    np.testing.assert_allclose(scored.columns[column], expected, rtol=0, atol=ATOL)


def _state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class ImprovedAestheticMLP(torch.nn.Module):
    """improved-aesthetic-predictor's MLP (simple_inference.py), without its pytorch-lightning base."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(self.input_size, 1024),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(1024, 128),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(128, 64),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(64, 16),
            torch.nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    """simple_inference.py's normalisation of the CLIP embedding, in numpy as there."""
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def test_aesthetic_score_equals_improved_aesthetic_predictors_inference(tiny_models, photos, scored):
    _, embedding = _reference_similarity_and_embedding(tiny_models.clip_vitl14, photos, TEXTS[: len(photos)])
    mlp = ImprovedAestheticMLP(embedding.shape[1])
    mlp.load_state_dict(_state_dict(tiny_models.aesthetic_laion_v2.weights))
    mlp.eval()
    with torch.no_grad():
        expected = mlp(torch.from_numpy(normalized(embedding)).type(torch.FloatTensor)).squeeze(-1).numpy()
    np.testing.assert_allclose(scored.columns["aesthetic_score_laion_v2"], expected, rtol=0, atol=ATOL)


def test_watermark_score_equals_laion_watermark_detections_inference(tiny_models, photos, scored):
    import timm
    import torchvision.transforms as T  # noqa: N812 (the reference code's own spelling)
    from torch import nn

    from models.heads import TIMM_ALIASES

    spec = tiny_models.watermark
    model = timm.create_model(TIMM_ALIASES.get(spec.arch, spec.arch), pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(in_features=model.num_features, out_features=625),  # 1536 for efficientnet_b3a
        nn.ReLU(),
        nn.Dropout(p=0.3),
        nn.Linear(in_features=625, out_features=256),
        nn.ReLU(),
        nn.Linear(in_features=256, out_features=2),
    )
    model.load_state_dict(_state_dict(spec.weights))
    model.eval()
    transforms = T.Compose([T.Resize((256, 256)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        batch = torch.stack([transforms(img.convert("RGB")) for img in _pil(photos)])
        pred = model(batch)
        syms = torch.nn.functional.softmax(pred, dim=1).numpy()
    watermark_prob = syms[:, 0]  # example_use.py: watermark_prob, clear_prob = sym
    np.testing.assert_allclose(scored.columns["watermark_score"], watermark_prob, rtol=0, atol=ATOL)


def test_nudenet_score_and_detections_equal_nudedetector_detect(photos, tmp_path):
    from nudenet import NudeDetector

    from models.images import decode_rgb, image_views, stack_views
    from models.base import ImageTextBatch
    from models.nsfw import NUDENET_EXPLICIT, NudenetScorer, NudenetSpec

    detector = NudeDetector()
    expected_found, expected_score = [], []
    for i, data in enumerate(photos):
        path = tmp_path / f"photo-{i}.jpg"
        path.write_bytes(data)
        found = detector.detect(str(path))
        expected_found.append([(d["class"], d["score"]) for d in found])
        expected_score.append(max((d["score"] for d in found if d["class"] in NUDENET_EXPLICIT), default=0.0))
    scorer = NudenetScorer("nsfw_nudenet", NudenetSpec())
    scorer.load("cpu")
    images = [decode_rgb(p) for p in photos]
    batch = ImageTextBatch(texts=["x"] * len(images), views=stack_views([image_views(im, scorer.views) for im in images], scorer.views), sizes=[im.size for im in images])
    got = scorer.detections(batch)
    assert [[c for c, _ in f] for f in got] == [[c for c, _ in f] for f in expected_found]
    for g, e in zip(got, expected_found, strict=True):
        np.testing.assert_allclose([s for _, s in g], [s for _, s in e], rtol=0, atol=ATOL)
    if not any(expected_found) and not (SHARED_DATA / "images" / "photos").is_dir():
        pytest.skip("no detection on the generated photos (../shared/data absent): nothing to compare")
    assert any(expected_found), "no photo gave nudenet any detection: the comparison would be empty"
    np.testing.assert_allclose(scorer.score(batch)["nsfw_score_nudenet"], expected_score, rtol=0, atol=ATOL)


def test_nudenet_column_of_the_runner_equals_the_scorers_own(tiny_models, photos, scored):
    """The runner hands the decoded sizes to the scorer (nudenet clips its boxes to them)."""
    from models.nsfw import NudenetScorer, NudenetSpec

    scorer = NudenetScorer("nsfw_nudenet", NudenetSpec())
    scorer.load("cpu")
    from models.base import ImageTextBatch
    from models.images import decode_rgb, image_views, stack_views

    images = [decode_rgb(p) for p in photos]
    batch = ImageTextBatch(texts=["x"] * len(images), views=stack_views([image_views(im, scorer.views) for im in images], scorer.views), sizes=[im.size for im in images])
    np.testing.assert_array_equal(scored.columns["nsfw_score_nudenet"], scorer.score(batch)["nsfw_score_nudenet"])


def test_the_trimmed_text_tower_equals_open_clips_encode_text(tiny_models):
    """The scorer runs the text tower only up to the batch's last EOT; with a caption longer than the
    context (truncated to 77) and one-word ones in the same batch, as well as short ones alone."""
    from models.clip import encode_text_trimmed

    model, _, tokenizer = _reference_clip(tiny_models.clip_vitb32)
    for texts in (["a", "a dog", "word " * 100, ""], ["a dog on a beach", "coffee"]):
        tokens = tokenizer(texts)
        with torch.no_grad():
            expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
            got = encode_text_trimmed(model, tokens)
        torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_length_sorted_text_chunks_give_open_clips_embeddings_in_input_order(tiny_models):
    from models.clip import TEXT_CHUNK_MIN, ClipScorer

    spec = tiny_models.clip_vitl14
    scorer = ClipScorer("clip_vitl14", "clip_similarity_vitl14", spec)
    scorer.load("cpu")
    model, _, tokenizer = _reference_clip(spec)
    texts = [" ".join(["word"] * ((i * 7) % 90)) or "x" for i in range(3 * TEXT_CHUNK_MIN + 5)]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    torch.testing.assert_close(scorer.encode_texts(texts), expected, rtol=0, atol=ATOL)


def test_opennsfw2_input_equals_opennsfw2s_preprocess_image_where_installed(photos):
    """opennsfw2 is not a dependency (it is in the convert-nsfw extra): checked where it is installed.
    By hand with opennsfw2 0.19.0's _image.py: identical arrays on the shared photos."""
    image_module = pytest.importorskip("opennsfw2._image")
    from models.images import decode_rgb, image_views
    from models.nsfw import OnnxNsfwScorer, OnnxSpec

    scorer = OnnxNsfwScorer("nsfw_opennsfw2", "opennsfw2", OnnxSpec("unused.onnx"))
    scorer.nhwc = True
    for data in photos:
        expected = image_module.preprocess_image(Image.open(io.BytesIO(data)))
        got = scorer.preprocess(image_views(decode_rgb(data), scorer.views)[scorer.views[0]][None])[0]
        np.testing.assert_array_equal(got, expected)
