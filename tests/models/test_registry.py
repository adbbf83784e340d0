"""The scorer table: a scorer given as one table row and one schema column reaches the MODELS.toml
sections, the weight checks, the column descriptions and the runner's output with nothing else edited."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

import models.runner
from models.base import ImageTextBatch, MissingWeightsError, ModelError, ViewSpec, file_field
from models.config import ModelsConfigError, models_config_type, parse_models_config
from models.images import decode_rgb
from models.registry import REGISTRY, SCORE_COLUMNS, SCORERS, ScorerEntry, ScorerTable, build_scorers
from models.runner import AnnotationRunner, RunOptions
from schemas import ANNOTATED, Column


@dataclass(frozen=True)
class BrightnessSpec:
    weights: str = file_field()
    scale: float = 1.0


class MeanBrightness:
    """A stand-in scorer: the mean grey level of each image times ``scale`` (its weights file is only checked)."""

    columns = ("brightness_score",)
    views = (ViewSpec("gray"),)
    provides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def __init__(self, name: str, spec: BrightnessSpec):
        self.name, self.spec = name, spec

    def describe(self) -> str:
        return f"mean brightness from {self.spec.weights}"

    def load(self, device: str) -> None:
        pass

    def score(self, batch: ImageTextBatch) -> dict[str, np.ndarray]:
        gray = batch.view(self.views[0])
        return {"brightness_score": np.array([g.mean() * self.spec.scale for g in gray], np.float32)}


ROW = ScorerEntry("brightness", BrightnessSpec, lambda spec, ctx: MeanBrightness(ctx.name, spec))
SCHEMA = ANNOTATED.extend("annotated", Column("brightness_score", "float32", model="brightness"))
OFFLINE_OFF = {"nsfw_nudenet": {"enabled": False}, "faces": {"detector": "none"}, "tokens": {"enabled": False}}


@pytest.fixture
def table() -> ScorerTable:
    return ScorerTable(SCORERS + (ROW,), SCHEMA)


def test_one_row_and_one_schema_column_make_a_models_toml_section(table, tmp_path):
    config_type = models_config_type(table)
    assert [f.name for f in dataclasses.fields(config_type)][-2:] == ["brightness", "source"]
    assert config_type().brightness is None
    cfg = parse_models_config({"brightness": {"weights": "w/bright.bin", "scale": 2.0}}, str(tmp_path), table=table)
    assert cfg.brightness == BrightnessSpec(str(tmp_path / "w" / "bright.bin"), 2.0)
    with pytest.raises(ModelsConfigError, match=r"unknown key\(s\) \['weight'\] in \[brightness\]; known: \['scale', 'weights'\]"):
        parse_models_config({"brightness": {"weight": "x"}}, table=table)
    with pytest.raises(ModelsConfigError, match="unknown section"):
        parse_models_config({"brightness": {"weights": "x"}})  # the shipped table has no such row


def test_the_new_row_is_checked_described_and_built(table, tmp_path):
    assert table.score_columns["brightness_score"] == "brightness"
    unconfigured = models_config_type(table)()
    assert table.describe_columns(unconfigured)["brightness_score"] == "null: [brightness] not configured"
    cfg = parse_models_config({"brightness": {"weights": "bright.bin"}}, str(tmp_path), table=table)
    assert table.weight_files(cfg) == {"brightness": str(tmp_path / "bright.bin")}
    with pytest.raises(MissingWeightsError, match=r"model 'brightness': weight file not found: .*bright\.bin"):
        table.check_weights(cfg)
    status = {s.column: s for s in table.check_models(cfg)}["brightness_score"]
    assert status.problem.startswith("model 'brightness': weight file not found") and status.how_to_get is None
    (tmp_path / "bright.bin").write_bytes(b"\0")
    table.check_weights(cfg)
    assert table.describe_columns(cfg)["brightness_score"] == f"mean brightness from {tmp_path / 'bright.bin'}"
    assert [s.name for s in table.build_scorers(cfg)][-1] == "brightness"


def test_the_runner_fills_the_new_column(table, tmp_path, photos, monkeypatch):
    monkeypatch.setattr(models.runner, "build_scorers", table.build_scorers)
    cfg = parse_models_config({"brightness": {"weights": "bright.bin", "scale": 0.5}, **OFFLINE_OFF}, str(tmp_path), table=table)
    scored = AnnotationRunner(cfg, RunOptions(device="cpu", batch_size=2)).score(photos[:3], ["a", "b", "c"])
    assert list(scored.columns) == ["brightness_score"]
    expected = [np.asarray(decode_rgb(p).convert("L")).mean() * 0.5 for p in photos[:3]]
    np.testing.assert_allclose(scored.columns["brightness_score"], expected, rtol=1e-5)


def test_a_row_without_a_schema_column_or_a_column_without_a_row_is_refused():
    with pytest.raises(ValueError, match=r"scorer sections \['brightness'\] fill no annotated column"):
        ScorerTable(SCORERS + (ROW,), ANNOTATED)
    with pytest.raises(ValueError, match=r"name sections \['brightness'\] that no scorer table row has"):
        ScorerTable(SCORERS, SCHEMA)


def test_a_scorer_filling_other_columns_than_the_schema_gives_its_row_is_refused(tmp_path):
    wrong = ScorerEntry("brightness", BrightnessSpec, lambda spec, ctx: MeanBrightness(ctx.name, spec))
    schema = ANNOTATED.extend("annotated", Column("luma_score", "float32", model="brightness"))
    table = ScorerTable(SCORERS + (wrong,), schema)
    cfg = parse_models_config({"brightness": {"weights": "b.bin"}}, str(tmp_path), table=table)
    with pytest.raises(ModelError, match=r"scorer 'brightness' fills \('brightness_score',\), the schema gives it \('luma_score',\)"):
        table.build_scorers(cfg)


def test_every_shipped_row_builds_a_scorer_for_exactly_its_schema_columns(tmp_path):
    sections = {
        "clip_vitb32": {"arch": "ViT-B-32", "weights": "b32.safetensors"},
        "clip_vitl14": {"arch": "ViT-L-14", "weights": "l14.safetensors"},
        "aesthetic_laion_v2": {"weights": "a.pth"},
        "watermark": {"weights": "w.pt"},
        "nsfw_opennsfw2": {"weights": "o.onnx"},
        "nsfw_gantman": {"weights": "g.onnx"},
    }
    scorers = build_scorers(parse_models_config(sections, str(tmp_path)))
    assert [s.name for s in scorers] == [e.name for e in SCORERS]
    assert {c: s.name for s in scorers for c in s.columns} == SCORE_COLUMNS
    assert SCORE_COLUMNS == {c.name: c.model for c in ANNOTATED.columns if c.model}
    l14 = next(s for s in scorers if s.name == "clip_vitl14")
    assert l14.provides == next(s for s in scorers if s.name == "aesthetic_laion_v2").needs


def test_the_shipped_table_is_the_registry_the_module_functions_use():
    assert list(REGISTRY.entries) == [
        "clip_vitb32", "clip_vitl14", "aesthetic_laion_v2", "watermark", "nsfw_opennsfw2", "nsfw_gantman",
        "nsfw_nudenet", "faces", "tokens",
    ]  # fmt: skip
    assert REGISTRY.how_to_get("watermark") == "`curation models fetch DIR --only watermark` (README, 'Models')"
    assert REGISTRY.how_to_get("nsfw_gantman") == "convert the Keras model to ONNX (README, 'Models')"
    assert REGISTRY.how_to_get("faces") == "`curation models fetch DIR --only faces` (README, 'Models')"  # YuNet
    assert REGISTRY.how_to_get("tokens") is None
