"""Spark's GPU scheduling on a real standalone cluster of this CPU machine: one 2-core worker advertises
two fake GPUs (spark.worker.resource.gpu.amount and a discovery script), the annotate job asks one GPU
per task, and each shard's marker and _stats.json record the address Spark gave its task. Tasks that ran
at the same time held distinct addresses; torch sees no CUDA there, so the models ran on the CPU and the
record says so."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from curation.stage import StageDir
from tests.conftest import REPO
from tests.jobs.standalone import cluster_env, standalone_cluster
from tests.models.fixtures import photo_bytes, tiny_models_toml, write_unique  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(600)]

FALLBACK = "Spark assigned GPU {} but torch sees no CUDA GPU: scored on the CPU"
SHARDS = 8


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT: one worker, 2 cores, advertising GPUs "0" and "1"."""
    base = tmp_path_factory.mktemp("gpu-cluster")
    script = base / "gpus.sh"
    script.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    script.chmod(0o755)
    env = cluster_env(CUDA_VISIBLE_DEVICES="")  # torch sees no CUDA even on a machine that has a GPU
    conf = {"spark.worker.resource.gpu.amount": "2", "spark.worker.resource.gpu.discoveryScript": str(script)}
    with standalone_cluster(base, workers=1, cores=2, memory="2g", worker_conf=conf, env=env) as master:
        yield master, env


def _config(path, master: str, models: str) -> None:
    path.write_text(f"""
[spark]
master = "{master}"
[spark.conf]
"spark.executor.resource.gpu.amount" = "2"
"spark.task.resource.gpu.amount" = "1"
"spark.executor.memory" = "1g"
[storage]
shared_local_paths = true
[annotate]
models = "{models}"
device = "auto"
batch_size = 2
decode_workers = 1
rows_per_shard = 1
embeddings = "none"
""")


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_tasks_run_on_the_gpus_spark_assigns_and_the_stage_records_them(gpu_cluster, tmp_path, tiny_models_toml):
    master, env = gpu_cluster
    unique = write_unique(tmp_path / "unique", photo_bytes(SHARDS), files=1, row_group_size=1)
    config = tmp_path / "gpu.toml"
    _config(config, master, tiny_models_toml)
    out = tmp_path / "annotated"
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "annotate", "--config", str(config), "--input", str(unique),
                           "--output", str(out)], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    stage = StageDir(str(out), "annotate")
    markers = [s.extra for s in stage.completed_shards().values()]
    assert len(markers) == SHARDS
    for m in markers:
        assert len(m["gpu_assigned"]) == 1 and m["gpu_assigned"][0] in ("0", "1")
        assert m["device"] == "cpu" and m["device_note"] == FALLBACK.format(m["gpu_assigned"][0])
    together = [(a, b) for a, b in itertools.combinations(markers, 2) if _overlap(a["task_window"], b["task_window"])]
    assert together  # two task slots: tasks did run at the same time...
    assert all(a["gpu_assigned"] != b["gpu_assigned"] for a, b in together)  # ...each on a GPU of its own

    stats = json.loads((out / "_stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] == SHARDS
    assert stats["shards_by_device"] == {"cpu": SHARDS} and stats["gpu_shards_scored_on_cpu"] == SHARDS
    by_address = {a: sum(m["gpu_assigned"] == [a] for m in markers) for a in ("0", "1")}
    assert stats["shards_by_gpu_address"] == {a: n for a, n in by_address.items() if n}
    assert set(stats["shards_by_gpu_address"]) == {"0", "1"}
    assert stats["device_notes"] == [FALLBACK.format("0"), FALLBACK.format("1")]
