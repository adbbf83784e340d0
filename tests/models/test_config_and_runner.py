"""MODELS.toml parsing, missing/unconfigured models, and the runner's handling of undecodable images."""

from __future__ import annotations

import numpy as np
import pytest

from models.base import MissingWeightsError
from models.config import ModelsConfig, ModelsConfigError, load_models_config, parse_models_config
from models.registry import SCORE_COLUMNS, check_weights, describe_columns
from models.runner import AnnotationRunner, RunOptions, resolve_device
from schemas import ANNOTATED


def test_relative_paths_resolve_against_the_models_file(tmp_path):
    (tmp_path / "MODELS.toml").write_text('[clip_vitb32]\narch = "ViT-B-32"\nweights = "w/b32.safetensors"\n')
    cfg = load_models_config(str(tmp_path / "MODELS.toml"))
    assert cfg.clip_vitb32.arch == "ViT-B-32"
    assert cfg.clip_vitb32.weights == str(tmp_path / "w" / "b32.safetensors")


def test_the_shipped_models_template_loads_with_weights_beside_the_configs_folder():
    """configs/models.toml names ../weights/...: a path the user wrote may climb out of its folder."""
    from pathlib import Path

    template = Path(__file__).resolve().parents[2] / "configs" / "models.toml"
    cfg = load_models_config(str(template))
    assert Path(cfg.clip_vitb32.weights).resolve().parent == template.parents[1] / "weights"


def test_missing_weight_file_stops_with_the_model_and_path_named(tmp_path):
    cfg = parse_models_config({"watermark": {"weights": "gone/watermark_model_v1.pt"}}, str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"model 'watermark': weight file not found: .*gone/watermark_model_v1\.pt"):
        check_weights(cfg)


def test_unknown_keys_and_sections_are_errors_listing_the_known_ones():
    with pytest.raises(ModelsConfigError, match="unknown section"):
        parse_models_config({"clip_vitb16": {}})
    with pytest.raises(ModelsConfigError, match=r"unknown key\(s\) \['weight'\] in \[watermark\]"):
        parse_models_config({"watermark": {"weight": "x.pt"}})


def test_aesthetic_needs_the_l14_embedding():
    with pytest.raises(ModelsConfigError, match="clip_vitl14"):
        parse_models_config({"aesthetic_laion_v2": {"weights": "a.pth"}})


def test_unconfigured_models_leave_null_columns_and_say_so():
    described = describe_columns(ModelsConfig())
    assert described["clip_similarity_vitb32"] == "null: [clip_vitb32] not configured"
    assert described["nsfw_score_opennsfw2"].startswith("null:")
    assert described["nsfw_score_nudenet"].startswith("nudenet detector")
    assert described["num_faces"].startswith("OpenCV Haar")
    assert set(SCORE_COLUMNS) <= set(ANNOTATED.names)


def test_offline_defaults_score_without_any_weights(photos):
    scored = AnnotationRunner(ModelsConfig(), RunOptions(device="cpu", batch_size=4)).score(photos[:3], ["a", "b c", "d"])
    assert set(scored.columns) == {"nsfw_score_nudenet", "num_faces", "num_tokens_bert", "num_tokens_gpt"}
    assert scored.columns["num_tokens_bert"].tolist() == [1, 2, 1]


def test_undecodable_rows_are_reported_and_the_others_scored(tiny_models, photos):
    images = [photos[0], b"<html>not an image</html>", None, photos[1], photos[0][:200]]
    scored = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=2)).score(images, ["t"] * 5)
    assert scored.ok.tolist() == [True, False, False, True, False]
    assert scored.errors[1] == "not a known image format" and scored.errors[2] == "no image bytes"
    assert scored.errors[4]  # a truncated JPEG says why
    assert all(len(v) == 2 for v in scored.columns.values())
    alone = AnnotationRunner(tiny_models, RunOptions(device="cpu", batch_size=2)).score([photos[0], photos[1]], ["t", "t"])
    for col, values in alone.columns.items():
        np.testing.assert_allclose(scored.columns[col], values, rtol=1e-4, atol=1e-5)


def test_device_auto_is_cpu_without_a_gpu_and_cuda_without_one_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        RunOptions(device="tpu")
