"""Where the annotate stage's shards were scored: each marker records the device and the GPU addresses
the task was assigned, and _stats.json counts them from the markers."""

from __future__ import annotations

from curation.lifecycle import input_files
from curation.stage import StageDir
from jobs.stages.annotate import SPEC, annotate_task, plan_chunks, stats_extra
from models.runner import RunOptions
from tests.models.fixtures import photo_bytes, tiny_models, tiny_models_toml, write_unique  # noqa: F401

FALLBACK = "Spark assigned GPU {} but torch sees no CUDA GPU: scored on the CPU"


def test_markers_and_stats_record_the_assigned_gpu_and_the_cpu_fallback(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the same record on a machine with a GPU
    unique = write_unique(tmp_path / "unique", photo_bytes(4), files=1, row_group_size=1)
    stage = StageDir(str(tmp_path / "annotated"), "annotate")
    stage.prepare()
    chunks = plan_chunks(input_files(SPEC, [str(unique)]), 1)
    assigned = [("0",), ("1",), ("1",), ()]
    run = RunOptions(device="auto", batch_size=2)
    for chunk, gpus in zip(chunks, assigned):
        annotate_task(stage, chunk, tiny_models, run, gpus=gpus)

    markers = stage.completed_shards()
    for chunk, gpus in zip(chunks, assigned):
        extra = markers[chunk.shard].extra
        assert extra["device"] == "cpu" and extra["gpu_assigned"] == list(gpus)
        assert extra["device_note"] == (FALLBACK.format(gpus[0]) if gpus else "")
        start, end = extra["task_window"]
        assert start <= end

    stats = stats_extra(stage, {}, run)
    assert stats["devices"] == ["cpu"] and stats["shards_by_device"] == {"cpu": 4}
    assert stats["shards_by_gpu_address"] == {"0": 1, "1": 2}
    assert stats["gpu_shards_scored_on_cpu"] == 3
    assert stats["device_notes"] == [FALLBACK.format("0"), FALLBACK.format("1")]
