"""Every user error ends in one line: exit 2, one `error:` line, no traceback, nothing half-written.

Each case runs the real command in a subprocess, as a user would; checks of inputs happen at planning,
on the driver, before any Spark task runs, so the output folder is never created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curation.stage import StageDir, rejected_table
from schemas import TEXT_OK
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _stage(folder: Path, stage: str, table: pa.Table | None = None) -> str:
    """A finished stage folder as the stage would leave it (one shard, _stats.json, _SUCCESS)."""
    out = StageDir(str(folder), stage)
    out.prepare()
    if table is not None:
        out.write_shard("part-00000", table, rejected_table([], stage), table.num_rows)
    out.finalize({}, 0.0)
    return str(folder)


def _text_ok_stage(folder: Path) -> str:
    row = {"uid": "a" * 32, "url": "http://127.0.0.1/x.jpg", "text": "a red bicycle by the sea", "page_url": "",
           "source_file": "f"}
    return _stage(folder, "filter_text", TEXT_OK.from_pylist([row]))


def _bad_config(tmp: Path) -> str:
    path = tmp / "bad.toml"
    path.write_text('[download]\nthreads = "many"\n')
    return str(path)


def _unknown_key_config(tmp: Path) -> str:
    path = tmp / "unknown.toml"
    path.write_text("[dedup.rules]\nmax_distanse = 4\n")
    return str(path)


def _run_root(tmp: Path) -> str:
    _stage(tmp / "run" / "extract", "extract")
    return str(tmp / "run")


# (id, command builder -> (argv, extra env), the message the one line must hold)
CASES = [
    ("config-wrong-type", lambda t: (["curation", "download", "--input", _text_ok_stage(t / "in"), "--output", str(t / "out"),
                                      "--config", _bad_config(t)], {}), r"\[download\] threads = 'many': expected an integer"),
    ("config-unknown-key", lambda t: (["curation", "dedup", "--input", str(t), "--output", str(t / "out"), "--config",
                                       _unknown_key_config(t)], {}), r"unknown key\(s\) \['max_distanse'\] in \[dedup.rules\]"),
    ("report-missing-run", lambda t: (["curation", "report", str(t / "nope")], {}), r"run folder not found"),
    ("report-of-a-stage-folder", lambda t: (["curation", "report", str(_stage(t / "run" / "annotate", "annotate"))], {}),
     r"is a stage folder, not a run folder"),
    ("stats-of-an-empty-folder", lambda t: (["curation", "stats", str(t)], {}), r"holds no stage folders"),
    ("annotate-on-the-wrong-stage", lambda t: (["curation", "annotate", "--input", _text_ok_stage(t / "filter-text"),
                                                "--output", str(t / "out")], {}),
     r"is the output of stage filter_text; annotate reads the output folder of stage dedup"),
    ("extract-missing-input", lambda t: (["curation", "extract", str(t / "missing.warc.wat.gz"), "--output", str(t / "out")], {}),
     r"input not found"),
    ("filter-text-unfinished-input", lambda t: (["curation", "filter-text", "--input", str(t), "--output", str(t / "out")], {}),
     r"is not a stage folder"),
    ("pipeline-unknown-stage", lambda t: (["curation", "pipeline", "--config", _stages_config(t)], {}),
     r"\[pipeline\] stages: unknown stage\(s\) \['dedupe'\]"),
    ("no-java", lambda t: (["curation", "extract", str(t), "--output", str(t / "out")], {"JAVA_HOME": "/nonexistent"}),
     r"JAVA_HOME=/nonexistent has no bin/java: install Java 17"),
    ("spark-submit-without-the-venv", lambda t: ([str(REPO / "spark-submit.sh"), "extract", str(t), "--output", str(t / "out")],
                                                 {"PATH": "/usr/bin:/bin", "PYSPARK_PYTHON": ""}),
     r"cannot import pyspark: activate the project's virtualenv"),
    ("spark-submit-unknown-stage", lambda t: ([str(REPO / "spark-submit.sh"), "nosuchstage"], {}),
     r"no stage 'nosuchstage'; stages: extract filter-text download dedup hash-index annotate semdedup balance select pipeline$"),
]


def _stages_config(tmp: Path) -> str:
    path = tmp / "stages.toml"
    path.write_text(f'[pipeline]\nrun_root = "{tmp / "out"}"\nsample = true\nstages = ["extract", "dedupe"]\n')
    return str(path)


@pytest.mark.parametrize("build, message", [(b, m) for _, b, m in CASES], ids=[c[0] for c in CASES])
def test_user_error_is_one_line_exit_2_and_writes_nothing(tmp_path, build, message):
    argv, env = build(tmp_path)
    if argv[0] == "curation":
        argv = [sys.executable, "-m", "jobs.cli", *argv[1:]]
    environ = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100", **env}
    environ = {k: v for k, v in environ.items() if v != ""}
    done = subprocess.run(argv, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output and len(errors) == 1, output[-3000:]
    assert __import__("re").search(message, errors[0]), errors[0]
    assert not (tmp_path / "out").exists()


def test_stats_of_a_run_root_prints_every_stage(tmp_path):
    _stage(tmp_path / "run" / "extract", "extract")
    _text_ok_stage(tmp_path / "run" / "filter-text")
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "stats", str(tmp_path / "run")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = __import__("json").loads(done.stdout)
    assert sorted(stats) == ["extract", "filter-text"] and stats["filter-text"]["rows_out"] == 1
