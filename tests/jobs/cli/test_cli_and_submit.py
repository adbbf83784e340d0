"""The two entry points users type: `curation ...` and `./spark-submit.sh <stage> ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from curation.stage import StageDir
from jobs.cli import app
from tests.conftest import REPO

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["extract"], ["pipeline"], ["sample"], ["stats"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[extract]\nrows_per_sard = 3\n")
    result = runner.invoke(app, ["extract", "x.wat.gz", "--output", str(tmp_path / "o"), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "rows_per_sard" in result.output and "rows_per_shard" in result.output


@pytest.mark.slow
@pytest.mark.spark
def test_pipeline_on_the_embedded_sample_leaves_parquet_stats_and_manifest(spark, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        (REPO / "configs" / "sample.toml").read_text().replace('run_root = "runs/sample"', f'run_root = "{tmp_path / "run"}"')
    )
    result = runner.invoke(app, ["pipeline", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    for name, stats in manifest["stages"].items():
        stage = StageDir(str(tmp_path / "run" / name), name)
        assert stage.is_complete()
        assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values())
        assert stage.count_rows() == stats["rows_out"] > 0
    assert manifest["stages"]["extract"]["rows_out"] > 1000


@pytest.mark.slow
def test_spark_submit_runs_a_stage_with_the_project_zipped(tmp_path):
    from curation.sample.crawl_files import write_sample

    write_sample(str(tmp_path / "in"), pages=20)
    env = {**os.environ, "SPARK_MASTER": "local[1]", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [str(REPO / "spark-submit.sh"), "extract", str(tmp_path / "in" / "crawl"), "--output", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = StageDir(str(tmp_path / "out"), "extract").stats()
    assert stats["rows_out"] > 0 and stats["files"] == 3


def test_spark_submit_names_the_stages_when_one_is_unknown():
    proc = subprocess.run([str(REPO / "spark-submit.sh"), "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "extract" in proc.stderr
