"""A real standalone Spark cluster for the cluster tests: a master and workers started from the installed
pyspark (bin/spark-class), all bound to 127.0.0.1 (SPARK_LOCAL_IP), each worker with a work folder of its
own, stopped by their own pids (each process leads its own session: the JVM and what it started)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark
import pytest

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(**extra: str) -> dict:
    """This environment without SPARK_* settings, bound to loopback, with this interpreter as Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_")}
    env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR="", PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, NO_ALBUMENTATIONS_UPDATE="1", **extra)
    return env


def _workers_alive(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return sum(w.get("state") == "ALIVE" for w in json.load(r).get("workers", []))
    except OSError:
        return 0


@contextmanager
def standalone_cluster(base: Path, workers: int = 2, cores: int = 1, memory: str = "1536m",
                       worker_conf: dict[str, str] | None = None, env: dict | None = None) -> Iterator[str]:
    """spark://127.0.0.1:PORT with ``workers`` workers of ``cores`` cores each; ``worker_conf``: the
    workers' properties file (e.g. the resources they advertise). Yields the master URL."""
    port, ui = free_port(), free_port()
    env = env or cluster_env()
    logs, procs, names = [], [], []

    def start(name: str, *args: str) -> None:
        log = open(base / f"{name}.log", "wb")
        logs.append(log)
        names.append(name)
        procs.append(subprocess.Popen([str(SPARK_CLASS), *args], env=env, cwd=base, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))

    extra: list[str] = []
    if worker_conf:
        props = base / "worker.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in worker_conf.items()))
        extra = ["--properties-file", str(props)]
    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui))
        master = f"spark://127.0.0.1:{port}"
        for i in range(workers):
            (base / f"work{i}").mkdir()
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores",
                  str(cores), "--memory", memory, "--webui-port", str(free_port()), "--work-dir", str(base / f"work{i}"),
                  *extra)
        deadline = time.monotonic() + 180
        while _workers_alive(ui) < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                text = "\n".join((base / f"{n}.log").read_text(errors="replace")[-2000:] for n in names)
                pytest.fail(f"standalone cluster did not start:\n{text}")
            time.sleep(1)
        yield master
    finally:
        for p in procs:
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
