"""The pipeline on a real standalone Spark cluster: a master and two 1-core workers started from the
installed pyspark (bin/spark-class), all bound to 127.0.0.1, each executor a JVM and Python worker of its
own in its own work folder. The sample runs with a *relative* run_root from a temporary working folder and
must give the annotated rows of a local[2] run; a local path under a non-local master that is not declared
shared stops at planning. The processes are stopped by their own pids."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pyspark
import pytest

from jobs.stages.config import load_config
from jobs import pipeline
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(2400)]  # two whole pipelines

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
COMPARED = ["uid", "id", "url", "text", "width", "height", "image_phash", "num_faces", "word_count", "num_tokens_bert",
            "clip_similarity_vitb32", "clip_similarity_vitl14", "aesthetic_score_laion_v2", "watermark_score",
            "nsfw_score_nudenet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_")}
    env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR="", PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, NO_ALBUMENTATIONS_UPDATE="1")
    return env


def _workers_alive(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return sum(w.get("state") == "ALIVE" for w in json.load(r).get("workers", []))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT with two 1-core workers; yields the master URL."""
    base = tmp_path_factory.mktemp("cluster")
    port, ui = _free_port(), _free_port()
    logs, procs = [], []

    def start(name: str, *args: str) -> None:
        log = open(base / f"{name}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen([str(SPARK_CLASS), *args], env=_env(), cwd=base, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))

    start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
          "--webui-port", str(ui))
    master = f"spark://127.0.0.1:{port}"
    for i in range(2):
        (base / f"work{i}").mkdir()
        start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "1",
              "--memory", "1536m", "--webui-port", str(_free_port()), "--work-dir", str(base / f"work{i}"))
    deadline = time.monotonic() + 180
    while _workers_alive(ui) < 2:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            text = "\n".join((base / f"{n}.log").read_text(errors="replace")[-2000:] for n in ("master", "worker0", "worker1"))
            pytest.fail(f"standalone cluster did not start:\n{text}")
        time.sleep(1)
    yield master, base
    for p in procs:  # by their own pids (each leads its own session: the JVM and what it started)
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for log in logs:
        log.close()


def _write_config(folder: Path, port: int, shared: bool) -> Path:
    text = (REPO / "configs" / "sample.toml").read_text()
    text = text.replace('run_root = "runs/sample"', 'run_root = "runs/cluster"')
    text = text.replace('random_models = "runs/sample/models"', 'random_models = "runs/models"')
    text = text.replace("batch_size = 32\nrows_per_shard = 500", "batch_size = 32\nrows_per_shard = 10")  # several tasks
    text = text.replace("rows_per_shard = 250", "rows_per_shard = 40")
    text = text.replace("timeout_s = 5.0", "timeout_s = 60.0")  # a busy machine: slow is not a failure here
    text = text.replace("sample_pages = 300", f"sample_pages = 36\nsample_image_port = {port}")
    text += f"\n[storage]\nshared_local_paths = {'true' if shared else 'false'}\n"
    path = folder / "cluster.toml"
    path.write_text(text)
    return path


def _cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _transient(run: Path) -> int:
    return json.loads((run / "download" / "_stats.json").read_text())["transient"]


def _annotated(folder: Path) -> list[dict]:
    rows = pq.read_table(sorted((folder / "annotate" / "data").glob("*.parquet"))).select(COMPARED).to_pylist()
    return sorted(rows, key=lambda r: r["uid"])


def test_relative_run_root_on_a_standalone_cluster_equals_a_local_run(cluster, spark, tmp_path):
    cluster, base = cluster
    port = _free_port()
    work = tmp_path / "cwd"
    work.mkdir()
    config = _write_config(work, port, shared=True)
    run = work / "runs" / "cluster"
    for _ in range(3):  # a rerun retries transient download failures (and redoes the stages after download)
        done = _cli(["pipeline", "--config", str(config), "--master", cluster], cwd=work)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        if not _transient(run):
            break
    manifest = json.loads((run / "_manifest.json").read_text())
    assert manifest["master"] == cluster and manifest["run_root"] == str(run)
    assert manifest["stages"]["extract"]["rows_in"] > 0 and manifest["stages"]["annotate"]["rows_out"] > 0
    executor_dirs = [p for p in base.glob("work*/app-*/*") if p.is_dir()]
    assert executor_dirs  # the executors ran in work folders of their own...
    assert not [p for d in executor_dirs for p in d.rglob("runs")]  # ...and wrote nothing there

    local = load_config(str(config), {"pipeline": {"run_root": str(tmp_path / "local")},
                                      "annotate": {"random_models": str(work / "runs" / "models")}})
    for _ in range(3):
        local_manifest = pipeline.run(spark, local)
        if not _transient(tmp_path / "local"):
            break
    assert not _transient(run) and not _transient(tmp_path / "local")
    assert {n: (s["rows_in"], s["rows_out"], s["rejected"]) for n, s in manifest["stages"].items()} == {
        n: (s["rows_in"], s["rows_out"], s["rejected"]) for n, s in local_manifest["stages"].items()
    }
    assert _annotated(run) == _annotated(tmp_path / "local")


def test_local_paths_under_a_cluster_master_must_be_declared_shared(cluster, tmp_path):
    cluster, _ = cluster
    config = _write_config(tmp_path, _free_port(), shared=False)
    done = _cli(["pipeline", "--config", str(config), "--master", cluster], cwd=tmp_path)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert re.search(r"is a local path but the Spark master is 'spark://127\.0\.0\.1:\d+'", errors[0])
    assert "shared_local_paths" in errors[0] and "s3://" in errors[0]
    assert not (tmp_path / "runs").exists()  # stopped at planning: nothing written
