"""The report says, at the top, which score columns came from random-weight models and which are null."""

from __future__ import annotations

from jobs.stages.report import RANDOM_MARK, score_notes

COLUMNS = {
    "clip_similarity_vitb32": "open_clip ViT-B-32 from /run/models/vitb32.safetensors",
    "aesthetic_score_laion_v2": "LAION aesthetic v2 MLP on the ViT-L/14 embedding, from /run/models/aesthetic.pth",
    "nsfw_score_nudenet": "nudenet detector (shipped 320n.onnx)",
    "num_faces": "OpenCV Haar cascade haarcascade_frontalface_default.xml (shipped with opencv)",
    "nsfw_score_opennsfw2": "null: [opennsfw2] not configured",
    "nsfw_score_gantman": "null: [gantman] not configured",
}


def test_random_weight_columns_and_null_columns_are_named():
    stats = {"columns": COLUMNS, "config": {"annotate": {"random_models": "/run/models"}}}
    random, nulls = score_notes(stats)
    assert random.startswith(f"{RANDOM_MARK} MODELS: aesthetic_score_laion_v2, clip_similarity_vitb32 come from")
    assert "/run/models" in random and "meaningless" in random and "nudenet" not in random
    assert nulls == ("Null columns: nsfw_score_gantman ([gantman] not configured); "
                     "nsfw_score_opennsfw2 ([opennsfw2] not configured)")


def test_real_weights_give_no_random_note():
    stats = {"columns": {k: v for k, v in COLUMNS.items() if not v.startswith("null")},
             "config": {"annotate": {"random_models": None, "models": "/w/MODELS.toml"}}}
    assert score_notes(stats) == []
