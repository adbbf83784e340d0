"""The dataset card `select --materialize` writes (OUT/README.md): Hugging Face front matter, columns with
their models, the preset and its SQL, the upstream funnel, safety lists, licences, config digest and the
random-weights notice, all read from the run's own stage folders."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
import yaml

from jobs import select as job
from jobs.stages.config import load_config
from models.clip import ClipSpec
from models.config import ModelsConfig
from models.registry import describe_columns
from schemas import ANNOTATED, REJECTED
from tests.conftest import annotated_row

FUNNEL = {  # stage -> (rows_in, rows_out, rejected by reason), in the run manifest's order
    "extract": (1000, 900, {"duplicate_uid": 100}),
    "filter-text": (900, 600, {"not_english": 250, "too_few_words": 50}),
    "download": (600, 40, {"http_error": 540, "blocklisted_url": 15, "blocklisted_image": 5}),
    "dedup": (40, 12, {"duplicate_phash": 28}),
    "annotate": (12, 12, {}),
}
COLUMNS = describe_columns(ModelsConfig(clip_vitb32=ClipSpec("ViT-B-32", "/weights/clip-vit-b-32-openai.safetensors")))


def write_stage(root, name: str, config: dict, **extra) -> None:
    rows_in, rows_out, rejected = FUNNEL[name]
    (root / name).mkdir(parents=True, exist_ok=True)
    stats = {"stage": name, "rows_in": rows_in, "rows_out": rows_out, "rejected": rejected,
             "rejected_total": sum(rejected.values()), "config": config, **extra}
    (root / name / "_stats.json").write_text(json.dumps(stats))
    (root / name / "_SUCCESS").write_text("")


def make_run(root, annotate: dict | None = None, safety: list[dict] | None = None, rejected: list[dict] | None = None):
    """A run root as the pipeline leaves it: one folder per stage with its _stats.json, the manifest, the
    annotated rows, and the download stage's rejected rows."""
    overrides = {"annotate": annotate or {}}
    if safety:
        overrides["safety"] = {"lists": safety}
    config = load_config(None, overrides).to_dict()
    for name in FUNNEL:
        extra = {"columns": COLUMNS, "input_fingerprint": "f" * 32} if name == "annotate" else {}
        write_stage(root, name, config, **extra)
    (root / "_manifest.json").write_text(json.dumps({"stages": {name: {} for name in FUNNEL}}))
    (root / "annotate" / "data").mkdir()
    rows = [annotated_row(i, width=800 if i % 4 else 200) for i in range(12)]
    pq.write_table(ANNOTATED.from_pylist(rows), root / "annotate" / "data" / "part-00000.parquet")
    (root / "download" / "rejected").mkdir()
    pq.write_table(REJECTED.from_pylist(rejected or []), root / "download" / "rejected" / "part-00000.parquet")
    return config


def select_card(root, out) -> tuple[dict, dict, str]:
    cfg = load_config(None, {"select": {"rows_per_shard": 4, "webdataset": True}})
    stats = job.run(None, cfg, str(root / "annotate"), "non-face", str(out), materialize=True)
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return stats, yaml.safe_load(front), body


def table_rows(body: str, section: str) -> list[list[str]]:
    part = body.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in part.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_front_matter_is_a_hugging_face_card_with_the_row_count_and_features(tmp_path):
    from huggingface_hub import DatasetCard

    config = make_run(tmp_path / "run")
    stats, front, _ = select_card(tmp_path / "run", tmp_path / "out")
    assert stats["rows_out"] == 9
    card = DatasetCard((tmp_path / "out" / "README.md").read_text()).data.to_dict()
    assert card["dataset_info"]["splits"] == [{"name": "train", "num_examples": 9}]
    features = {f["name"]: f["dtype"] for f in card["dataset_info"]["features"]}
    assert list(features) == ANNOTATED.names
    assert (features["id"], features["width"], features["clip_similarity_vitb32"], features["image_bytes"]) == ("int64", "int32", "float32", "binary")
    assert card["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/part-*.parquet"}]},
        {"config_name": "webdataset", "data_files": [{"split": "train", "path": "wds/part-*.tar"}]},
    ]
    assert card["size_categories"] == ["n<1K"] and card["license"] == "other"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert front["curation"] == {"preset": "non-face", "rows": 9, "rows_in": 12, "config_digest": digest, "random_weights": False}


def test_every_column_has_its_meaning_and_the_model_and_weights_behind_it(tmp_path):
    make_run(tmp_path / "run")
    _, _, body = select_card(tmp_path / "run", tmp_path / "out")
    rows = {r[0]: r for r in table_rows(body, "Columns")}
    assert list(rows) == ANNOTATED.names
    for column in ANNOTATED.columns:
        assert rows[column.name][2] == column.doc.replace("|", "\\|")
    assert rows["clip_similarity_vitb32"][3] == "open_clip ViT-B-32 from /weights/clip-vit-b-32-openai.safetensors"
    assert rows["watermark_score"][3] == "null: [watermark] not configured"
    assert rows["num_faces"][3] == "OpenCV Haar cascade haarcascade_frontalface_default.xml (shipped with opencv)"
    assert rows["text"][3] == "" and rows["width"][1] == "int32"


def test_card_gives_the_preset_its_sql_and_the_upstream_funnel(tmp_path):
    make_run(tmp_path / "run")
    stats, _, body = select_card(tmp_path / "run", tmp_path / "out")
    assert f"SELECT * FROM annotated WHERE {stats['where']} ORDER BY uid" in body
    assert "- `width > 256`: 9 of 12 rows pass it alone" in body
    assert "`$p0` = 256" in body
    assert table_rows(body, "Upstream funnel") == [
        ["extract", "1,000", "900", "100", "duplicate_uid 100"],
        ["filter-text", "900", "600", "300", "not_english 250, too_few_words 50"],
        ["download", "600", "40", "560", "blocklisted_image 5, blocklisted_url 15, http_error 540"],
        ["dedup", "40", "12", "28", "duplicate_phash 28"],
        ["annotate", "12", "12", "0", "-"],
    ]
    assert "## Safety lists" not in body  # the run applied none
    assert "fingerprint: `" + "f" * 32 + "`" in body


def test_model_licences_come_from_the_registry_and_the_shipping_packages(tmp_path):
    import importlib.metadata

    make_run(tmp_path / "run")
    _, _, body = select_card(tmp_path / "run", tmp_path / "out")
    licences = {r[0]: r[2] for r in table_rows(body, "Model licences")}
    assert set(licences) == {"clip_vitb32", "nsfw_nudenet", "faces", "tokens"}  # the sections that filled a column
    assert licences["clip_vitb32"] == "MIT (OpenAI CLIP), the licence of the public checkpoint clip-vit-b-32-openai.safetensors"
    assert licences["nsfw_nudenet"] == f"MIT (shipped with nudenet {importlib.metadata.version('nudenet')})"
    assert licences["tokens"].startswith("MIT License (shipped with blingfire")  # its metadata gives a classifier only


def test_random_weight_models_put_a_notice_on_the_card(tmp_path):
    make_run(tmp_path / "run", annotate={"random_models": str(tmp_path / "random")})
    _, front, body = select_card(tmp_path / "run", tmp_path / "out")
    assert front["curation"]["random_weights"] is True
    notice = next(line for line in body.splitlines() if "RANDOM-WEIGHT MODELS" in line)
    assert "clip_similarity_vitb32" in notice and str(tmp_path / "random") in notice and "meaningless" in notice
    licences = {r[0]: r[2] for r in table_rows(body, "Model licences")}
    assert licences["clip_vitb32"].startswith("random weights")


def test_a_models_file_marked_random_weight_counts_as_random(tmp_path):
    models = tmp_path / "models" / "MODELS.toml"
    models.parent.mkdir()
    models.write_text("# RANDOM-WEIGHT tiny checkpoints of the real architectures (curation models init-random).\n")
    make_run(tmp_path / "run", annotate={"models": str(models)})
    _, front, body = select_card(tmp_path / "run", tmp_path / "out")
    assert front["curation"]["random_weights"] is True and "RANDOM-WEIGHT MODELS" in body
    models.write_text("[clip_vitb32]\n")
    _, front, body = select_card(tmp_path / "run", tmp_path / "other")
    assert front["curation"]["random_weights"] is False and "RANDOM-WEIGHT" not in body


def test_safety_lists_are_named_with_the_rows_each_removed(tmp_path):
    pytest.importorskip("filters.safety")
    lists = [{"name": "csam-urls", "path": str(tmp_path / "u.txt"), "kind": "url_md5"},
             {"name": "ncmec-md5", "path": str(tmp_path / "i.txt"), "kind": "image_md5"},
             {"name": "unused", "path": str(tmp_path / "x.txt"), "kind": "image_sha256"}]
    rejected = (
        [{"uid": f"u{i}", "stage": "download", "reason": "blocklisted_url", "detail": "safety list csam-urls (url_md5)"} for i in range(15)]
        + [{"uid": f"i{i}", "stage": "download", "reason": "blocklisted_image", "detail": "safety list ncmec-md5 (image_md5)"} for i in range(5)]
        + [{"uid": "h", "stage": "download", "reason": "http_error", "detail": "safety list unused (image_sha256)"}]
    )
    make_run(tmp_path / "run", safety=lists, rejected=rejected)
    _, _, body = select_card(tmp_path / "run", tmp_path / "out")
    assert table_rows(body, "Safety lists") == [["csam-urls", "url_md5", "15"], ["ncmec-md5", "image_md5", "5"], ["unused", "image_sha256", "0"]]


def test_a_selection_of_a_bare_parquet_file_still_gets_a_card(tmp_path):
    pq.write_table(ANNOTATED.from_pylist([annotated_row(i) for i in range(3)]), tmp_path / "t.parquet")
    cfg = load_config(None, {"select": {"rows_per_shard": 2}})
    job.run(None, cfg, str(tmp_path / "t.parquet"), "high-resolution", str(tmp_path / "out"), materialize=True)
    text = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert front["dataset_info"]["splits"] == [{"name": "train", "num_examples": 3}]
    assert front["curation"]["config_digest"] is None and len(front["configs"]) == 1
    assert "Not recorded: the input is not a stage folder of a run root." in text


def test_select_without_materialize_writes_no_card(tmp_path):
    make_run(tmp_path / "run")
    job.run(None, load_config(None, {}), str(tmp_path / "run" / "annotate"), "non-face", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "README.md").exists()


@pytest.mark.parametrize("detector,random_models,expected", [
    ("opencv-haar", None, "(shipped with opencv-python-headless "),
    ("opencv-haar", "random/", "(shipped with opencv-python-headless "),  # the shipped cascade is no random-weight model
    ("yunet", None, "MIT (OpenCV model zoo, YuNet), the licence of the public checkpoint face_detection_yunet_2023mar.onnx"),
    ("yunet", "random/", "random weights: no trained checkpoint (scores meaningless)"),
])  # fmt: skip
def test_the_face_counters_licence_is_yunets_checkpoint_or_opencvs_package(detector, random_models, expected):
    from jobs.stages.card import RunRecord, model_licences
    from models.faces import FacesSpec, face_counter

    weights = "w/face_detection_yunet_2023mar.onnx" if detector == "yunet" else None
    described = face_counter("faces", FacesSpec(detector=detector, weights=weights)).describe()
    rows = model_licences(RunRecord(annotate={"columns": {"num_faces": described}}, random_models=random_models))
    assert expected in {r[0]: r[2] for r in rows}["faces"]
