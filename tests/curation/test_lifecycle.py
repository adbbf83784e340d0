"""The one stage lifecycle, without Spark: planned shards must leave markers, fingerprints follow the
input, stale stages are redone or refused, inputs are checked on the driver, paths are absolute."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import storage
from jobs.stages.config import ConfigError, load_config
from curation.errors import ClusterPathError, IncompleteStageError, InputError, StaleStageError
from curation.lifecycle import InputNotReadyError, RunContext, StageSpec, Work, fingerprint, input_files, run_stage
from curation.stage import SUCCESS, StageDir, rejected_table
from curation.storage import StorageOptions

SPEC = StageSpec("copy", upstream="source", input_columns=("uid",))


def _source(folder, rows: int = 3, stage: str = "source") -> str:
    out = StageDir(str(folder), stage)
    out.prepare()
    table = pa.table({"uid": [f"u{i}" for i in range(rows)]})
    out.write_shard("part-0", table, rejected_table([], stage), rows)
    out.finalize({}, 0.0, planned={"part-0"})
    return str(folder)


def _copy_work(write: set[str] | None = None, calls: list | None = None):
    """Work that copies each input file into one shard; ``write`` limits which planned shards it writes."""

    def work(stage: StageDir, files: list[str]) -> Work:
        if calls is not None:
            calls.append(len(files))
        planned = {f"part-{i}" for i in range(len(files))}
        for i, f in enumerate(files):
            if write is None or f"part-{i}" in write:
                table = pq.read_table(f)
                stage.write_shard(f"part-{i}", table, rejected_table([], "copy"), table.num_rows)
        return Work(planned)

    return work


def _run(tmp_path, work, redo_stale=False, overwrite=False, master=None, src=None):
    src = src or str(tmp_path / "src")
    stage = StageDir(str(tmp_path / "out"), "copy")
    files = input_files(SPEC, [src])
    return run_stage(SPEC, stage, files, work, config={}, context=RunContext(master, overwrite, redo_stale))


def test_a_planned_shard_without_marker_fails_naming_it_and_is_never_complete(tmp_path):
    _source(tmp_path / "src")
    extra = tmp_path / "src" / "data" / "part-1.parquet"
    pq.write_table(pa.table({"uid": ["x"]}), extra)  # a second input file: two shards planned
    with pytest.raises(IncompleteStageError, match=r"1 of 2 planned shards left no marker .*\(first: part-1\)"):
        _run(tmp_path, _copy_work(write={"part-0"}))
    assert not (tmp_path / "out" / SUCCESS).exists()
    stats = _run(tmp_path, _copy_work())  # a rerun writes the missing shard and completes
    assert stats["rows_in"] == 4 and stats["shards"] == 2


def test_complete_stage_is_reused_only_while_its_input_is_unchanged(tmp_path):
    _source(tmp_path / "src")
    calls: list = []
    first = _run(tmp_path, _copy_work(calls=calls))
    assert _run(tmp_path, _copy_work(calls=calls)) == first and len(calls) == 1  # reused: work not called

    shard = tmp_path / "src" / "data" / "part-0.parquet"
    time.sleep(0.01)
    pq.write_table(pa.table({"uid": ["u0", "u1"]}), shard)  # the upstream shard rewritten (one row less)
    with pytest.raises(StaleStageError, match=r"copy at .*/out cannot be reused: it was built from another version .*--overwrite"):
        _run(tmp_path, _copy_work(calls=calls))
    again = _run(tmp_path, _copy_work(calls=calls), redo_stale=True)
    assert again["rows_in"] == 2 and len(calls) == 2 and again["input_fingerprint"] != first["input_fingerprint"]


def test_fingerprint_follows_size_mtime_names_and_settings_not_the_folder(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "x.parquet").write_bytes(b"1234")
    files = [str(a / "x.parquet")]
    base = fingerprint(files, StorageOptions())
    assert fingerprint(files, StorageOptions()) == base
    assert fingerprint(files, StorageOptions(), {"k": 1}) != base
    moved = tmp_path / "b"
    moved.mkdir()
    (moved / "x.parquet").write_bytes(b"1234")
    os.utime(moved / "x.parquet", ns=(os.stat(a / "x.parquet").st_atime_ns, os.stat(a / "x.parquet").st_mtime_ns))
    assert fingerprint([str(moved / "x.parquet")], StorageOptions()) == base  # same name, size, mtime elsewhere
    os.utime(a / "x.parquet", ns=(1, 1))
    assert fingerprint(files, StorageOptions()) != base


def test_inputs_are_checked_on_the_driver(tmp_path):
    with pytest.raises(InputNotReadyError, match="input not found"):
        input_files(SPEC, [str(tmp_path / "nope")])
    other = _source(tmp_path / "other", stage="elsewhere")
    with pytest.raises(InputError, match=r"is the output of stage elsewhere; copy reads the output folder of stage source"):
        input_files(SPEC, [other])
    src = _source(tmp_path / "src")
    (tmp_path / "src" / SUCCESS).unlink()
    with pytest.raises(InputNotReadyError, match="has no _SUCCESS"):
        input_files(SPEC, [src])
    pq.write_table(pa.table({"id": [1]}), tmp_path / "loose.parquet")
    with pytest.raises(InputError, match=r"lacks columns \['uid'\]"):
        input_files(StageSpec("copy", input_columns=("uid",), finished_input=False), [str(tmp_path / "loose.parquet")])


def test_relative_paths_become_absolute_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert StageDir("runs/x", "s").uri == str(tmp_path / "runs" / "x")
    assert storage.absolute("s3://b/k") == "s3://b/k" and storage.absolute("file://rel") == f"file://{tmp_path}/rel"
    (tmp_path / "f.warc.gz").write_bytes(b"x")
    assert storage.expand_inputs(["f.warc.gz"]) == [str(tmp_path / "f.warc.gz")]
    cfg = load_config(None, {"pipeline": {"run_root": "runs/a", "inputs": ["in/x"]}, "annotate": {"random_models": "m"}})
    assert cfg.pipeline.run_root == str(tmp_path / "runs" / "a") and cfg.pipeline.inputs == (str(tmp_path / "in" / "x"),)
    assert cfg.annotate.random_models == str(tmp_path / "m")


def test_local_paths_under_a_cluster_master_need_to_be_declared_shared(tmp_path):
    _source(tmp_path / "src")
    with pytest.raises(ClusterPathError, match=r"is a local path but the Spark master is 'spark://h:7077'.*s3://"):
        _run(tmp_path, _copy_work(), master="spark://h:7077")
    assert not (tmp_path / "out").exists()
    storage.check_shared("s3://b/k", "yarn", StorageOptions())
    storage.check_shared("file:///shared/x", "yarn", StorageOptions())
    storage.check_shared("/mnt/nfs/x", "k8s://h", StorageOptions(shared_local_paths=True))
    storage.check_shared("/tmp/x", "local[2]", StorageOptions())


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("download", {"threads": "many"}, r"\[download\] threads = 'many': expected an integer"),
        ("download", {"retry_transient": 1}, r"\[download\] retry_transient = 1: expected true or false"),
        ("pipeline", {"inputs": "a.wat.gz"}, r"\[pipeline\] inputs = 'a.wat.gz': expected a list"),
        ("annotate", {"batch_size": 0}, r"\[annotate\] batch_size"),
    ],
)
def test_config_values_of_the_wrong_type_name_the_key(section, values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {section: values})
