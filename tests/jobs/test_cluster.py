"""The pipeline on a real standalone Spark cluster: a master and two 1-core workers started from the
installed pyspark (bin/spark-class), all bound to 127.0.0.1, each executor a JVM and Python worker of its
own in its own work folder. The sample runs with a *relative* run_root from a temporary working folder and
must give the annotated rows of a local[2] run; a local path under a non-local master that is not declared
shared stops at planning. The processes are stopped by their own pids."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.crawl.reader import extract_file
from curation.sample.crawl_files import write_sample
from jobs.stages.config import load_config
from curation.stage import REJECTED_DIR, StageDir
from jobs import balance, pipeline
from tests.conftest import REPO
from tests.jobs.test_balance_job import HEAD, TAIL, captions, write_filter_text_output
from tests.jobs.standalone import cluster_env as _env
from tests.jobs.standalone import free_port as _free_port
from tests.jobs.standalone import standalone_cluster

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(2400)]  # two whole pipelines

COMPARED = ["uid", "id", "url", "text", "width", "height", "image_phash", "num_faces", "word_count", "num_tokens_bert",
            "clip_similarity_vitb32", "clip_similarity_vitl14", "aesthetic_score_laion_v2", "watermark_score",
            "nsfw_score_nudenet"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:PORT with two 1-core workers; yields the master URL and the cluster's folder."""
    base = tmp_path_factory.mktemp("cluster")
    with standalone_cluster(base, workers=2, cores=1) as master:
        yield master, base


def _write_config(folder: Path, port: int, shared: bool) -> Path:
    text = (REPO / "configs" / "sample.toml").read_text()
    text = text.replace('run_root = "runs/sample"', 'run_root = "runs/cluster"')
    text = text.replace('random_models = "runs/sample/models"', 'random_models = "runs/models"')
    text = text.replace("batch_size = 32\nrows_per_shard = 500", "batch_size = 32\nrows_per_shard = 10")  # several tasks
    text = text.replace("rows_per_shard = 250", "rows_per_shard = 40")
    text = text.replace("timeout_s = 5.0", "timeout_s = 60.0")  # a busy machine: slow is not a failure here
    text = text.replace("sample_pages = 300", f"sample_pages = 36\nsample_image_port = {port}")
    text += f"\n[storage]\nshared_local_paths = {'true' if shared else 'false'}\n"
    text += f'\n[[safety.lists]]\nname = "blocked-sample-urls"\npath = "{_blocked_urls(folder, port)}"\nkind = "url_md5"\n'
    path = folder / "cluster.toml"
    path.write_text(text)
    return path


def _blocked_urls(folder: Path, port: int, every: int = 5) -> Path:
    """A url_md5 safety list holding every ``every``-th image URL of the sample the run will write."""
    sample = folder / "blocked-sample"
    manifest = write_sample(str(sample), pages=36, image_host=f"http://127.0.0.1:{port}")
    urls = sorted({u for f in manifest["files"] for u in extract_file(f).urls})
    path = folder / "blocked-urls.txt"
    path.write_text("# sample URLs the run must never request\n"
                    + "".join(hashlib.md5(u.encode()).hexdigest() + "\n" for u in urls[::every]))
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
    assert manifest["stages"]["download"]["rejected"].get("blocklisted_url", 0) > 0  # the safety list applied on the executors
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


def _balanced(folder: Path) -> tuple[list[dict], set[tuple]]:
    stage = StageDir(str(folder), "balance")
    kept = sorted(stage.read().to_pylist(), key=lambda r: r["uid"])
    return kept, {(r["uid"], r["reason"], r["detail"]) for r in stage.read(REJECTED_DIR).to_pylist()}


def test_balance_on_a_standalone_cluster_keeps_the_rows_of_a_local_run(cluster, spark, tmp_path):
    """Input, output and entry list given as relative paths: the driver reads the list and broadcasts it, so
    the executors (each in a work folder of its own, where those paths lead nowhere) never open it."""
    cluster, _ = cluster
    work = tmp_path / "cwd"
    write_filter_text_output(work / "runs" / "filter-text", captions(1200, seed=11), files=4)
    (work / "metadata.json").write_text(json.dumps(HEAD + TAIL + ["never seen"]), encoding="utf-8")
    config = work / "balance.toml"
    config.write_text("[storage]\nshared_local_paths = true\n")
    done = _cli(["balance", "--input", "runs/filter-text", "--output", "runs/balance", "--metadata", "metadata.json",
                 "--t", "40", "--config", str(config), "--master", cluster], cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    cfg = load_config(str(config), {"balance": {"metadata": str(work / "metadata.json"), "t": 40}})
    local = balance.run(spark, [str(work / "runs" / "filter-text")], str(tmp_path / "local"), cfg)
    on_cluster = json.loads((work / "runs" / "balance" / "_stats.json").read_text())
    assert on_cluster["config"]["spark"]["master"] == cluster
    assert (on_cluster["rows_in"], on_cluster["rows_out"], on_cluster["rejected"]) == (
        local["rows_in"], local["rows_out"], local["rejected"])
    assert on_cluster["balance"] == local["balance"] and on_cluster["rejected"]["balanced_out"] > 0
    assert _balanced(work / "runs" / "balance") == _balanced(tmp_path / "local")
