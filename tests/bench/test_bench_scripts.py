"""Every bench script runs as bench/README.md shows from a fresh clone: from any working directory,
with only the installed packages importable (no ``tests``, no repository root on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.name for p in (REPO / "bench").glob("*.py"))


@pytest.fixture(scope="module")
def installed_only(tmp_path_factory) -> dict[str, str]:
    """An environment whose import path holds the packages pyproject.toml installs, and nothing else
    of the repository (what ``pip install -e .`` gives a fresh clone)."""
    site = tmp_path_factory.mktemp("site")
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in patterns:
        for package in REPO.glob(pattern):
            if (package / "__init__.py").exists() and "." not in pattern.rstrip("*"):
                (site / package.name).symlink_to(package)
    assert not (site / "tests").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", BENCHES)
def test_every_bench_prints_its_help_from_a_clean_working_directory(script, installed_only, tmp_path):
    done = _run([str(REPO / "bench" / script), "--help"], installed_only, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_bench_annotate_runs_without_the_test_fixtures(installed_only, tmp_path):
    """A tiny-model smoke run: the photos come from the bench itself, never from ``tests``."""
    args = [str(REPO / "bench" / "annotate.py"), "--size", "tiny", "--images", "4", "--batch-size", "2", "--device", "cpu",
            "--decode-workers", "1", "--models-dir", str(tmp_path / "models")]  # fmt: skip
    done = _run(args, installed_only, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "whole stage" in done.stdout and "clip_vitb32" in done.stdout
