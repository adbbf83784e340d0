"""The whole pipeline against an S3 API (moto's server on 127.0.0.1): run_root, the embedded sample's
crawl files, every stage folder (with dedup's _work/), the run manifest and report.html on s3://."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from curation import storage
from jobs.stages.config import load_config
from curation.sample.images import sample_images
from curation.sample.crawl_files import write_sample
from curation.stage import DATA, REJECTED_DIR, StageDir
from jobs import extract, hash_index, pipeline
from jobs.annotate import resolve_models
from jobs.cli import app
from models.weights.random_init import write_random_models
from models.runner import AnnotationRunner, RunOptions
from schemas import ANNOTATED, CANDIDATES
from tests.conftest import REPO

COMPARED = ["uid", "id", "url", "text", "width", "height", "image_phash", "num_faces", "clip_similarity_vitb32",
            "clip_similarity_vitl14", "aesthetic_score_laion_v2", "watermark_score", "nsfw_score_nudenet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(run_root: str, models: str, endpoint: str, port: int, blocklist: str):
    """configs/sample.toml, small, as a user would point it at a bucket (the image port is in the
    sample's links, so in the uids: both runs use the same)."""
    return load_config(
        str(REPO / "configs" / "sample.toml"),
        {
            "pipeline": {"run_root": run_root, "sample_pages": 40, "sample_image_port": port},
            "annotate": {"random_models": models, "rows_per_shard": 40},
            "extract": {"rows_per_shard": 100},
            "download": {"rows_per_shard": 40, "threads": 8,  # a busy machine: slow is not a failure here
                         "fetch": {"allowed_addresses": ["127.0.0.1"], "only_allowed_addresses": True, "timeout_s": 60.0}},
            "dedup": {"blocklist": [blocklist]},
            "storage": {"s3_endpoint_url": endpoint},
        },
    )


def _blocklist_on_s3(spark, client, bucket: str, endpoint: str) -> str:
    """A hash-index output on S3, of an "evaluation set" of S3 objects: every 5th sample image."""
    for name, data in sample_images([f"img-{i:05d}.jpg" for i in range(0, 150, 5)]).items():
        client.put_object(Bucket=bucket, Key=f"evalset/{name}", Body=data)
    out = f"s3://{bucket}/blocklist"
    cfg = load_config(None, {"storage": {"s3_endpoint_url": endpoint}})
    assert hash_index.run(spark, [f"evalset=s3://{bucket}/evalset"], out, cfg)["rows_out"] == 30
    return out


def _annotated(stage: StageDir) -> list[dict]:
    table = stage.read(table=ANNOTATED)
    return sorted(table.select([c for c in COMPARED if c in table.column_names]).to_pylist(), key=lambda r: r["uid"])


@pytest.mark.slow
@pytest.mark.spark
def test_the_whole_pipeline_runs_on_s3_like_it_runs_locally(spark, s3_server, s3_bucket, tmp_path, monkeypatch):
    bucket, client = s3_bucket
    monkeypatch.chdir(tmp_path)  # a URI mistaken for a local path would land in ./s3:/
    models = str(tmp_path / "models")  # read from a local folder while the run writes to S3
    local_root = str(tmp_path / "local" / "run")
    root = f"s3://{bucket}/run"

    endpoint, port = s3_server.s3_endpoint_url, _free_port()
    blocklist = _blocklist_on_s3(spark, client, bucket, endpoint)  # read from S3 by both runs
    manifest = pipeline.run(spark, _config(root, models, endpoint, port, blocklist))
    local = pipeline.run(spark, _config(local_root, models, endpoint, port, blocklist))

    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}  # not folder markers
    assert {"run/_manifest.json", "run/report.html"} <= keys
    assert not [k for k in keys if "/.tmp-" in k]  # every write renamed onto its final name
    assert {k for k in keys if k.startswith("run/input/crawl/")} == {f"run/input/crawl/{n}" for n in (
        "CC-MAIN-sample-00000.warc.wat.gz", "CC-MAIN-sample-00001.warc.wat.gz", "CC-MAIN-sample-00002.warc.gz")}
    assert any(k.startswith("run/dedup/_work/hashed/") for k in keys)
    assert json.loads(client.get_object(Bucket=bucket, Key="run/_manifest.json")["Body"].read())["stages"] == manifest["stages"]
    assert b"annotate" in client.get_object(Bucket=bucket, Key="run/report.html")["Body"].read()
    assert list(manifest["stages"]) == list(pipeline.DEFAULT_STAGES)
    for name, stats in manifest["stages"].items():
        stage = StageDir(storage.join(root, name), name, s3_server)
        assert f"run/{name}/_SUCCESS" in keys and f"run/{name}/_stats.json" in keys
        full = stage.stats()
        assert full["rows_in"] == full["rows_out"] + sum(full["rejected"].values())
        assert stage.count_rows(DATA) == full["rows_out"] and stage.count_rows(REJECTED_DIR) == full["rejected_total"]
        assert stage.read().num_rows == full["rows_out"]
        assert {k: stats[k] for k in ("rows_in", "rows_out", "rejected")} == {
            k: local["stages"][name][k] for k in ("rows_in", "rows_out", "rejected")
        }
    assert manifest["stages"]["annotate"]["rows_out"] > 0
    assert manifest["stages"]["dedup"]["rejected"]["eval_set_match"] > 0
    on_s3 = _annotated(StageDir(storage.join(root, "annotate"), "annotate", s3_server))
    assert on_s3 == _annotated(StageDir(storage.join(local_root, "annotate"), "annotate"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "models"]


def test_random_models_are_written_to_and_loaded_from_s3(s3_server, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_MODEL_CACHE", str(tmp_path / "cache"))  # where s3:// weights are copied to be read
    bucket, client = s3_bucket
    cfg = load_config(None, {"annotate": {"random_models": f"s3://{bucket}/models"},
                             "storage": {"s3_endpoint_url": s3_server.s3_endpoint_url}})
    models = resolve_models(cfg)
    assert models.source == f"s3://{bucket}/models/MODELS.toml"
    assert models.watermark.weights == f"s3://{bucket}/models/watermark.safetensors"
    local = tmp_path / "local"
    write_random_models(str(local), "tiny")  # the same seed: the same bytes
    for f in sorted(local.iterdir()):
        assert client.get_object(Bucket=bucket, Key=f"models/{f.name}")["Body"].read() == f.read_bytes(), f.name
    runner = AnnotationRunner(models, RunOptions(device="cpu"), s3_server).load()  # arch .json and weights from S3
    assert len(runner.scorers) >= 4


@pytest.mark.spark
def test_extract_reads_s3_objects_named_by_a_paths_file_or_a_glob_on_s3(spark, s3_server, s3_bucket, tmp_path):
    bucket, client = s3_bucket
    segment = f"s3://{bucket}/cc/crawl-data/segment-1"
    endpoint = ["--s3-endpoint", s3_server.s3_endpoint_url]
    assert CliRunner().invoke(app, ["sample", segment, "--pages", "30", *endpoint]).exit_code == 0  # straight to S3
    local = write_sample(str(tmp_path / "local"), pages=30)["files"]
    written = [f"{segment}/crawl/{storage.basename(f)}" for f in local]
    for s3_file, local_file in zip(written, local):
        assert storage.read_bytes(s3_file, s3_server) == storage.read_bytes(local_file)
    # a Common Crawl style paths file: gzipped, relative lines, resolved against its own folder
    lines = "".join(f"{f.split('/cc/', 1)[1]}\n" for f in written)
    client.put_object(Bucket=bucket, Key="cc/wat.paths.gz", Body=gzip.compress(lines.encode()))
    cfg = load_config(None, {"storage": {"s3_endpoint_url": s3_server.s3_endpoint_url}})

    by_paths = extract.run(spark, [f"s3://{bucket}/cc/wat.paths.gz"], f"s3://{bucket}/out/paths", cfg)
    by_glob = extract.run(spark, [f"{segment}/crawl/*.gz"], f"s3://{bucket}/out/glob", cfg)
    reference = extract.run(spark, local, str(tmp_path / "out"), cfg)
    assert by_paths["inputs"] == by_glob["inputs"] == sorted(written)
    want = {(r["uid"], r["url"], r["text"]) for r in StageDir(str(tmp_path / "out"), "extract").read(table=CANDIDATES).to_pylist()}
    assert len(want) == reference["rows_out"] > 0
    for name in ("paths", "glob"):
        stage = StageDir(f"s3://{bucket}/out/{name}", "extract", s3_server)
        assert {(r["uid"], r["url"], r["text"]) for r in stage.read(table=CANDIDATES).to_pylist()} == want
    shown = CliRunner().invoke(app, ["stats", f"s3://{bucket}/out/paths", *endpoint])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["rows_out"] == reference["rows_out"]


@pytest.mark.slow
def test_spark_submit_takes_the_s3_endpoint_from_the_run_config(s3_server, s3_bucket, tmp_path):
    """A fresh driver and executors, no AWS_ENDPOINT_URL anywhere: the endpoint reaches the executors'
    Python workers only inside the tasks' closures (StorageOptions in StageDir)."""
    bucket, _ = s3_bucket
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[pipeline]\nrun_root = "s3://{bucket}/run"\nsample = true\nsample_pages = 12\nstages = ["extract"]\n'
        f'[storage]\ns3_endpoint_url = "{s3_server.s3_endpoint_url}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env.update({"SPARK_MASTER": "local[1]", "PYSPARK_PYTHON": sys.executable})
    proc = subprocess.run([str(REPO / "spark-submit.sh"), "pipeline", "--config", str(cfg)], check=False, env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = StageDir(f"s3://{bucket}/run/extract", "extract", s3_server)
    stats = stage.stats()
    assert stats["files"] == 3 and stats["rows_out"] == stage.count_rows() > 0
    assert storage.exists(f"s3://{bucket}/run/_manifest.json", s3_server)
    assert not (tmp_path / "s3:").exists()  # nothing went to a local folder named like the URI
