"""Resume after a crash: `curation pipeline` is SIGKILLed (driver, JVM and Python workers, as a lost machine
would) while each stage is half done, then run again; the result must be what an uninterrupted run gives
(same rows, same ids, same rejections, same counts), and the shards finished before the kill are not redone.

One run root takes every kill in turn (killed in extract, rerun and killed in filter-text, ..., killed in
annotate, killed before the report, rerun to the end): each rerun resumes the stage the previous process
died in, so the kills cost about one pipeline run plus a restart each. The pipeline runs as a real
process (`python -m jobs.cli pipeline`) on a small embedded sample cut into many small shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.stage import INPUTS_FILE, REJECTED_DIR, SHARDS, SUCCESS, StageDir
from tests.conftest import REPO

pytestmark = pytest.mark.slow

STAGES = ("extract", "filter-text", "download", "dedup", "annotate")
WAIT_S = 400  # for one process to reach its kill point or its end (a busy 2-core machine is slow)

# The embedded sample (configs/sample.toml), smaller and cut into several shards per stage so that a kill
# finds some shards done and some not.
CONFIG = """
[pipeline]
run_root = "{root}"
sample = true
sample_pages = 90
sample_image_port = {port}

[spark]
master = "local[2]"

[spark.conf]
"spark.sql.shuffle.partitions" = "4"
"spark.ui.enabled" = "false"
"spark.local.dir" = "{spark_dir}"

[extract]
rows_per_shard = 100

[filter_text]
rows_per_shard = 80

[download]
threads = 8
rows_per_shard = 40

[download.fetch]
allowed_addresses = ["127.0.0.1"]
only_allowed_addresses = true
timeout_s = 60.0  # a loopback fetch that times out on a busy machine would be retried: not what is tested

[dedup.rules.links]
max_distance = 4

[annotate]
random_models = "{models}"
batch_size = 8
rows_per_shard = 40
"""


@dataclass
class Run:
    root: Path
    config: Path
    logs: list[Path]


@dataclass
class Kill:
    stage: str
    at_kill: dict[str, tuple[int, int]]  # marker file of a finished shard -> (inode, mtime) when killed
    complete_at_kill: bool
    log: Path


def _free_port() -> int:
    """A free port below the ephemeral range: no other process's outgoing connection takes it between the
    runs that serve the sample's images on it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10_000, low), 100):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _write_config(tmp: Path, name: str, port: int) -> Run:
    root = tmp / name
    config = tmp / f"{name}.toml"
    config.write_text(CONFIG.format(root=root, port=port, spark_dir=tmp / "spark-local", models=tmp / "models"))
    return Run(root, config, [])


def _start(run: Run) -> subprocess.Popen:
    log = run.root.parent / f"{run.root.name}-{len(run.logs)}.log"
    run.logs.append(log)
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "pipeline", "--config", str(run.config)],
            cwd=REPO, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:]


def _run_to_end(run: Run) -> None:
    proc = _start(run)
    try:
        rc = proc.wait(timeout=WAIT_S)
    finally:
        _kill_tree(proc)
    assert rc == 0, _tail(run.logs[-1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(tree.get(p, []))
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and every descendant. The CLI leads its own process group, but pyspark's worker
    daemon makes a group of its own, so a killpg alone would leave the Python workers running: stop the
    whole tree first (a stopped process forks nothing), then kill it."""
    if proc.poll() is not None:
        return
    stopped: set[int] = set()
    while new := _tree(proc.pid) - stopped:
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _markers(stage_dir: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in (stage_dir / SHARDS).glob("*.json"):
        if not p.name.startswith("."):
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns)
    return out


def _first_shard(folder: Path) -> bool:
    """Kill point: the stage's first shard is done (or, too late, the whole stage is)."""
    return bool(_markers(folder)) or (folder / SUCCESS).exists()


def _first_phase(folder: Path, prefix: str) -> bool:
    """Kill point: every input file has its first-phase shard (``prefix``): the corpus-wide step runs."""
    pinned = folder / INPUTS_FILE
    if (folder / SUCCESS).exists():
        return True
    if not pinned.exists():
        return False
    return sum(name.startswith(prefix) for name in _markers(folder)) >= len(json.loads(pinned.read_text()))


KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "extract": _first_shard,  # some crawl files extracted
    "filter-text": partial(_first_phase, prefix="part-i"),  # every caption checked; the text-frequency count runs
    "download": _first_shard,  # some slices fetched
    "dedup": partial(_first_phase, prefix="part-h"),  # every image hashed; the global decisions run
    "annotate": _first_shard,  # some chunks scored
}


def _run_and_kill(run: Run, ready: Callable[[], bool]) -> None:
    """Start the pipeline, wait until ``ready()``, then kill its whole process tree."""
    proc = _start(run)
    deadline = time.monotonic() + WAIT_S
    try:
        while not ready():
            assert proc.poll() is None, f"the pipeline ended (rc {proc.returncode}) before the kill point:\n{_tail(run.logs[-1])}"
            assert time.monotonic() < deadline, f"no kill point after {WAIT_S}s:\n{_tail(run.logs[-1])}"
            time.sleep(0.02)
    finally:
        _kill_tree(proc)


@pytest.fixture(scope="module")
def port() -> int:
    return _free_port()  # every run serves the sample's images on it: the port is part of the image urls (uids)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, port) -> Run:
    run = _write_config(tmp_path_factory.mktemp("resume"), "baseline", port)
    _run_to_end(run)
    return run


@pytest.fixture(scope="module")
def resumed(baseline, port) -> tuple[Run, dict[str, Kill]]:
    run = _write_config(baseline.root.parent, "resumed", port)
    kills: dict[str, Kill] = {}
    for stage in STAGES:
        folder = run.root / stage
        _run_and_kill(run, partial(KILL_POINTS[stage], folder))
        kills[stage] = Kill(stage, _markers(folder), (folder / SUCCESS).exists(), run.logs[-1])
    # the last step: every stage done, the manifest and report not yet written
    _run_and_kill(run, (run.root / "annotate" / SUCCESS).exists)
    kills["report"] = Kill("report", {}, (run.root / "report.html").exists(), run.logs[-1])
    _run_to_end(run)
    return run, kills


# --- comparing two runs -------------------------------------------------------------------------


def _relative(table: pa.Table, root: Path) -> pa.Table:
    """Paths of this run's files (``source_file``, duplicate details) made relative to the run root."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            table = table.set_column(i, field, pc.replace_substring(table.column(i), f"{root}/", ""))
    return table


def _kept(root: Path, stage: str) -> pa.Table:
    return _relative(StageDir(str(root / stage), stage).read(), root).sort_by("uid")


def _rejected(root: Path, stage: str) -> pa.Table:
    """Rejected rows; a network failure's detail is kept to its kind ("dns", "timeout", ...): the sample's
    example.* hosts fail by this machine's resolver, whose wording is not the pipeline's."""
    table = _relative(StageDir(str(root / stage), stage).read(REJECTED_DIR), root)
    network = pc.equal(table.column("reason"), "failed_to_download")
    kind = pc.replace_substring_regex(table.column("detail"), pattern=":.*", replacement="")
    table = table.set_column(table.schema.get_field_index("detail"), "detail", pc.if_else(network, kind, table.column("detail")))
    return table.sort_by([("uid", "ascending"), ("reason", "ascending"), ("detail", "ascending")])


def _differences(a: pa.Table, b: pa.Table) -> str:
    if a.num_rows != b.num_rows or a.schema != b.schema:
        return f"{a.num_rows} rows {a.schema.names} vs {b.num_rows} rows {b.schema.names}"
    columns = [n for n in a.column_names if not a.column(n).equals(b.column(n))]
    return f"columns that differ: {columns}"


COUNTS = ("rows_in", "rows_out", "rejected", "rejected_total", "shards")


def _counts(root: Path, stage: str) -> dict:
    stats = StageDir(str(root / stage), stage).stats()
    return {k: stats[k] for k in COUNTS}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_a_kill_during_each_stage_then_a_rerun_gives_the_uninterrupted_output(stage, baseline, resumed):
    run, kills = resumed
    kill = kills[stage]
    assert kill.at_kill and not kill.complete_at_kill, f"the kill did not land inside {stage} ({kill.log})"

    base, again = _kept(baseline.root, stage), _kept(run.root, stage)
    assert base.num_rows > 0
    assert again.equals(base), _differences(again, base)
    base_rej, again_rej = _rejected(baseline.root, stage), _rejected(run.root, stage)
    assert base_rej.num_rows > 0 or stage == "annotate"  # annotate rejects only undecodable images: none here
    assert again_rej.equals(base_rej), _differences(again_rej, base_rej)
    assert _counts(run.root, stage) == _counts(baseline.root, stage)

    # the shards finished before the kill were skipped by the rerun: their markers were not rewritten
    after = _markers(run.root / stage)
    assert {name: after.get(name) for name in kill.at_kill} == kill.at_kill
    assert set(after) == set(_markers(baseline.root / stage))


def test_the_resumed_run_ends_with_the_same_ids_files_manifest_and_report(baseline, resumed):
    run, kills = resumed
    assert not kills["report"].complete_at_kill, "the last kill did not land before the report"
    assert _kept(run.root, "annotate").column("id").equals(_kept(baseline.root, "annotate").column("id"))
    files = _files(run.root)
    assert files == _files(baseline.root)  # same shards, no temp file or _work/ left behind by a kill
    assert not [f for f in files if Path(f).name.startswith(".tmp-")]
    manifest, expected = (json.loads((r.root / "_manifest.json").read_text())["stages"] for r in (run, baseline))
    assert {s: {k: v[k] for k in COUNTS if k in v} for s, v in manifest.items()} == {
        s: {k: v[k] for k in COUNTS if k in v} for s, v in expected.items()
    }
    assert (run.root / "report.html").stat().st_size > 0
