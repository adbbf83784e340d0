"""CLIP B/32 + L/14, the aesthetic head and the watermark model, through the production loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.base import ImageTextBatch, ModelError
from models.clip import ClipSpec
from models.heads import AestheticScorer, HeadSpec, WatermarkScorer, WatermarkSpec
from models.images import decode_rgb, image_views, stack_views
from models.registry import L14_EMBEDDING
from models.runner import AnnotationRunner, RunOptions
from models.weights import save_state_dict

TEXTS = ["a dog on a beach", "a city street", "a bowl of fruit", "a red car", "coffee", "people"]


def _batch(photos, views, texts=TEXTS) -> ImageTextBatch:
    per_image = [image_views(decode_rgb(p), views) for p in photos]
    return ImageTextBatch(texts=list(texts[: len(photos)]), views=stack_views(per_image, views))


@pytest.fixture(scope="module")
def runner(tiny_models):
    return AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=3, decode_workers=2)).load()


def _scorer(runner, name):
    return next(s for s in runner.scorers if s.name == name)


def test_clip_similarities_are_cosines_in_range(runner, photos):
    scored = runner.score(photos, TEXTS)
    for col in ("clip_similarity_vitb32", "clip_similarity_vitl14"):
        values = scored.columns[col]
        assert values.dtype == np.float32 and len(values) == len(photos)
        assert np.all(np.abs(values) <= 1.0 + 1e-5)
        assert np.unique(values).size > 1  # depends on the image/text pair


def test_scores_do_not_depend_on_batch_size(tiny_models, photos):
    one = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=1, decode_workers=1)).score(photos, TEXTS)
    four = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4, decode_workers=3)).score(photos, TEXTS)
    for col, values in one.columns.items():
        np.testing.assert_allclose(values, four.columns[col], rtol=1e-4, atol=1e-5, err_msg=col)


def test_cpu_runs_are_deterministic(tiny_models, photos):
    a = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4)).score(photos, TEXTS)
    b = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4)).score(photos, TEXTS)
    for col in a.columns:
        assert np.array_equal(a.columns[col], b.columns[col]), col


def test_l14_image_tower_runs_once_and_the_aesthetic_head_reads_its_embedding(runner, photos):
    l14 = _scorer(runner, "clip_vitl14")
    calls = []
    hook = l14.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:
        batch = _batch(photos[:4], runner.views)
        out = runner.score_batch(batch, {})
    finally:
        hook.remove()
    assert len(calls) == 1  # one image forward for similarity and aesthetic together
    shared = batch.features[L14_EMBEDDING]
    torch.testing.assert_close(shared.norm(dim=-1), torch.ones(4))
    expected = _scorer(runner, "aesthetic_laion_v2").head(l14.encode_images(batch.view(l14.views[0])))
    np.testing.assert_allclose(out["aesthetic_score_laion_v2"], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_b32_and_l14_share_one_decoded_224_view(runner):
    b32, l14 = _scorer(runner, "clip_vitb32"), _scorer(runner, "clip_vitl14")
    assert b32.views == l14.views
    assert sum(v.kind == "center_crop" for v in runner.views) == 1


def test_watermark_is_a_probability_from_the_laion_head(runner, photos):
    wm = _scorer(runner, "watermark")
    assert [k for k in wm.model.state_dict() if k.startswith("classifier.")] == [
        "classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias",
        "classifier.5.weight", "classifier.5.bias",
    ]  # fmt: skip
    values = runner.score(photos, TEXTS).columns["watermark_score"]
    assert np.all((values >= 0) & (values <= 1))


def test_production_architectures_build_through_the_same_code():
    from models.clip import build_clip
    from models.heads import watermark_net

    with torch.device("meta"):  # shapes only: no memory, no weights
        b32 = build_clip("ViT-B-32", device="meta")
        l14 = build_clip("ViT-L-14", device="meta")
        wm = watermark_net("efficientnet_b3a")
    assert b32.text_projection.shape[1] == 512 and b32.visual.image_size == (224, 224)
    assert l14.text_projection.shape[1] == 768  # the aesthetic v2 head's input
    assert wm.classifier[0].in_features == 1536 and wm.classifier[-1].out_features == 2


def test_checkpoint_of_the_wrong_architecture_is_refused_naming_the_file(tmp_path, tiny_models):
    bad = tmp_path / "aesthetic.safetensors"
    save_state_dict({"layers.0.weight": torch.zeros(1024, 64), "layers.0.bias": torch.zeros(1024)}, str(bad))
    scorer = AestheticScorer("aesthetic_laion_v2", HeadSpec(str(bad)), L14_EMBEDDING)
    with pytest.raises(ModelError, match="aesthetic.safetensors does not fit"):
        scorer.load("cpu")


def test_pickled_checkpoints_are_not_loaded(tmp_path):
    path = tmp_path / "watermark.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module, not a state dict
    with pytest.raises(ModelError, match="not a weights-only checkpoint"):
        WatermarkScorer("watermark", WatermarkSpec(str(path), arch="test_efficientnet")).load("cpu")


def test_unknown_clip_architecture_is_a_clear_error(tmp_path):
    from models.clip import ClipScorer

    weights = tmp_path / "w.safetensors"
    save_state_dict({"x": torch.zeros(1)}, str(weights))
    with pytest.raises(ModelError, match="unknown open_clip architecture 'ViT-Q-99'"):
        ClipScorer("clip_vitb32", "clip_similarity_vitb32", ClipSpec("ViT-Q-99", str(weights))).load("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fp16_scores_match_cpu(tiny_models, photos):
    cpu = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=4)).score(photos, TEXTS)
    gpu = AnnotationRunner(tiny_models, RunOptions(device="cuda", batch_size=4)).score(photos, TEXTS)
    for col in ("clip_similarity_vitb32", "clip_similarity_vitl14", "watermark_score", "aesthetic_score_laion_v2"):
        np.testing.assert_allclose(gpu.columns[col], cpu.columns[col], atol=2e-2, err_msg=col)
