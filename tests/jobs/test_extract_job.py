"""The extract Spark job in local[2]: equal to the pure path, accounted, resumable, S3-capable."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.stages.config import Config, ExtractOptions
from curation.crawl.reader import collapse_duplicates, extract_file
from curation.stage import InputsChangedError
from curation.stage import StageDir
from curation.storage import StorageError
from jobs import extract as job
from schemas import CANDIDATES
from tests.conftest import shared

pytestmark = pytest.mark.spark

SMALL_SHARDS = Config(extract=ExtractOptions(rows_per_shard=150))


def _crawl_files() -> list[str]:
    d = shared("crawl")
    names = [
        "derived/aut-example.iawc.warc.wat.gz",
        "derived/dolma-sample-0000.iawc.warc.wat.gz",
        "derived/resiliparse-warcfile.iawc.warc.wat.gz",
        "whirlwind.warc.gz",
        "dolma-sample-0001.warc.gz",
        "iawc-link-extraction-test.warc",
        "hostile/derived-truncated-resiliparse-warcfile.warc.gz",
        "hostile/whirlwind.warc.wet.gz",
        "hostile/toimik/WarcParserWatUrlExtractor__Invalid__invalid.warc",
    ]
    return [str(d / n) for n in names]


def _sorted(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["uid"], r.get("reason", ""), r.get("detail") or ""))


def _run(spark, inputs, out, config=SMALL_SHARDS, **kw) -> dict:
    return job.run(spark, inputs, str(out), config, **kw)


def test_spark_job_equals_pure_python_path_and_accounts_for_every_row(spark, tmp_path):
    files = _crawl_files()
    stats = _run(spark, files, tmp_path / "out")

    results = [extract_file(f) for f in sorted(files)]
    links = pa.concat_tables([r.links_table() for r in results])
    kept, dup_rejected = collapse_duplicates(links)
    expected_rejected = pa.concat_tables([r.rejected_table() for r in results] + [dup_rejected])

    stage = StageDir(str(tmp_path / "out"), "extract")
    assert _sorted(stage.read(table=CANDIDATES)) == _sorted(CANDIDATES.conform(kept))
    assert _sorted(stage.read("rejected")) == _sorted(expected_rejected)
    assert stats["rows_in"] == sum(r.rows_in for r in results)
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values())
    assert stats["shards"] > 1  # rows_per_shard=150 spreads the output
    assert {"truncated_record", "no_crawl_records", "invalid_json", "empty_alt", "duplicate_uid"} <= set(stats["rejected"])
    failed = {e["file"] for e in stats["file_errors"]}
    assert any(f.endswith("whirlwind.warc.wet.gz") for f in failed)
    uids = stage.read(table=CANDIDATES).column("uid").to_pylist()
    assert len(uids) == len(set(uids))


def test_rerun_over_complete_output_does_nothing(spark, tmp_path):
    files = _crawl_files()[:3]
    _run(spark, files, tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    _run(spark, files, tmp_path / "out")
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert before == after


def test_resume_after_partial_run_redoes_only_missing_shards_and_equals_clean_run(spark, tmp_path):
    files = _crawl_files()
    _run(spark, files, tmp_path / "clean")
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "clean", partial)
    # simulate a crash: no _SUCCESS/_stats, one phase-A shard and two bucket shards lost, temp litter
    (partial / "_SUCCESS").unlink()
    (partial / "_stats.json").unlink()
    (partial / "_shards/part-f000001.json").unlink()
    (partial / "_work/links/part-f000001.parquet").unlink()
    for marker in sorted((partial / "_shards").glob("part-b*.json"))[:2]:
        marker.unlink()
        (partial / "data" / (marker.stem + ".parquet")).unlink()
    (partial / "data/.tmp-123-part-b00009.parquet").write_bytes(b"half a file")
    untouched = partial / "_work/links/part-f000000.parquet"
    mtime = untouched.stat().st_mtime_ns

    stats = _run(spark, files, partial)
    assert untouched.stat().st_mtime_ns == mtime  # completed shard not redone
    clean, resumed = StageDir(str(tmp_path / "clean"), "extract"), StageDir(str(partial), "extract")
    assert _sorted(resumed.read(table=CANDIDATES)) == _sorted(clean.read(table=CANDIDATES))
    assert _sorted(resumed.read("rejected")) == _sorted(clean.read("rejected"))
    assert {k: v for k, v in stats.items() if k != "elapsed_seconds"} == {
        k: v for k, v in clean.stats().items() if k != "elapsed_seconds"
    }
    assert not list(partial.rglob(".tmp-*"))


def test_resume_with_different_inputs_is_refused(spark, tmp_path):
    files = _crawl_files()
    _run(spark, files[:2], tmp_path / "out")
    (tmp_path / "out/_SUCCESS").unlink()
    with pytest.raises(InputsChangedError):
        _run(spark, files[:3], tmp_path / "out")
    stats = _run(spark, files[:3], tmp_path / "out", overwrite=True)
    assert stats["files"] == 3


def test_inputs_as_folder_glob_and_paths_file(spark, tmp_path):
    src = shared("crawl", "derived")
    crawl = tmp_path / "crawl-data" / "segment"
    crawl.mkdir(parents=True)
    for name in ("whirlwind.iawc.warc.wat.gz", "dolma-sample-0001.iawc.warc.wat.gz"):
        shutil.copy(src / name, crawl / name)
    paths = tmp_path / "wat.paths.gz"
    paths.write_bytes(gzip.compress(b"crawl-data/segment/whirlwind.iawc.warc.wat.gz\ncrawl-data/segment/dolma-sample-0001.iawc.warc.wat.gz\ncrawl-data/segment/missing.warc.wat.gz\n"))
    by_folder = _run(spark, [str(tmp_path / "crawl-data")], tmp_path / "a")
    by_glob = _run(spark, [str(crawl / "*.wat.gz")], tmp_path / "b")
    by_paths = _run(spark, [str(paths)], tmp_path / "c")
    assert by_folder["rows_out"] == by_glob["rows_out"] == by_paths["rows_out"] > 0
    # the paths file names a file that does not exist: a file-level rejection, not a crash
    assert by_paths["rejected"]["unreadable_file"] == 1
    assert any(e["file"].endswith("missing.warc.wat.gz") for e in by_paths["file_errors"])


def test_missing_input_is_a_clear_error_before_any_work(spark, tmp_path):
    with pytest.raises(StorageError, match="input not found: .*nope.wat.gz"):
        _run(spark, [str(tmp_path / "nope.wat.gz")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_s3_input_and_output_through_a_moto_server(spark, tmp_path, s3_server, s3_bucket):
    bucket, client = s3_bucket
    files = _crawl_files()[:4]
    for f in files:
        client.upload_file(f, bucket, f"crawl/{Path(f).name}")
    config = Config(storage=s3_server, extract=ExtractOptions(rows_per_shard=150))
    stats = _run(spark, [f"s3://{bucket}/crawl/"], f"s3://{bucket}/runs/extract", config)
    local = _run(spark, files, tmp_path / "local")
    assert stats["rows_in"] == local["rows_in"] and stats["rows_out"] == local["rows_out"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/extract/")["Contents"]}
    assert "runs/extract/_SUCCESS" in keys and "runs/extract/_stats.json" in keys
    s3_stage = StageDir(f"s3://{bucket}/runs/extract", "extract", s3_server)
    got = {(r["url"], r["text"]) for r in s3_stage.read(table=CANDIDATES).to_pylist()}
    want = {(r["url"], r["text"]) for r in StageDir(str(tmp_path / "local"), "extract").read(table=CANDIDATES).to_pylist()}
    assert got == want
