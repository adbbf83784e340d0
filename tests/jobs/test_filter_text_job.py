"""The filter-text Spark job in local[2]: equal to the pure path, the 10/11 frequency boundary across
input shards, accounted, resumable. Small inputs (a few hundred rows): the machine has two cores."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.stages.config import Config, FilterTextOptions
from jobs.stages.filter_text import filter_text_table
from curation.lifecycle import InputNotReadyError
from curation.stage import StageDir
from filters.text import TextRules
from jobs import filter_text as job
from schemas import CANDIDATES, TEXT_OK
from tests.conftest import shared

pytestmark = pytest.mark.spark

SMALL_SHARDS = Config(filter_text=FilterTextOptions(rows_per_shard=60))
TEN_TIMES = "A red sports car parked on the street"
ELEVEN_TIMES = "Green tea in a white cup on a wooden table"


def _row(text: str, i: int) -> dict:
    url = f"https://example.com/{i}.jpg"
    uid = hashlib.md5((text + url).encode()).hexdigest()
    return {"uid": uid, "url": url, "text": text, "page_url": "https://example.com/", "source_file": "sample.warc.gz"}


def _texts() -> list[str]:
    """Real LAION captions plus copies of two texts (10 and 11 of them, case and spacing varied)."""
    laion = pq.read_table(shared("captions", "laion_test_10000.parquet"), columns=["TEXT"]).column("TEXT").to_pylist()
    real = [t for t in laion[:260] if t]
    ten = [TEN_TIMES] * 7 + [TEN_TIMES.upper(), "  " + TEN_TIMES, TEN_TIMES.replace(" ", "  ")]
    eleven = [ELEVEN_TIMES] * 10 + [ELEVEN_TIMES.lower()]
    return real + ten + eleven + ["", "tiny", "x" * 1001, "Un chien sur la plage au coucher du soleil"]


def _candidates_stage(path, texts: list[str], files: int = 3) -> str:
    """An extract-like output folder: data/part-*.parquet over several files, and _SUCCESS."""
    rows = [_row(t, i) for i, t in enumerate(texts)]
    (path / "data").mkdir(parents=True)
    for f in range(files):
        pq.write_table(CANDIDATES.from_pylist(rows[f::files]), path / "data" / f"part-b{f:05d}.parquet")
    (path / "_SUCCESS").write_bytes(b"")
    return str(path)


def _sorted(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["uid"], r.get("reason") or ""))


def test_spark_job_equals_pure_path_with_the_10_11_frequency_boundary(spark, tmp_path):
    texts = _texts()
    src = _candidates_stage(tmp_path / "candidates", texts)
    stats = job.run(spark, src, str(tmp_path / "out"), SMALL_SHARDS)

    expected_kept, expected_rejected = filter_text_table(CANDIDATES.from_pylist([_row(t, i) for i, t in enumerate(texts)]))
    stage = StageDir(str(tmp_path / "out"), "filter_text")
    kept, rejected = stage.read(table=TEXT_OK), stage.read("rejected")
    assert _sorted(kept) == _sorted(expected_kept)
    assert _sorted(rejected) == _sorted(expected_rejected)

    assert stats["rows_in"] == len(texts) == stats["rows_out"] + sum(stats["rejected"].values())
    assert stats["rejected"]["frequent_text"] == 11
    assert {"empty_text", "too_short", "too_long", "not_english"} <= set(stats["rejected"])
    kept_texts = kept.column("text").to_pylist()
    assert sum(t.casefold() == TEN_TIMES.casefold() for t in kept_texts) == 10  # 10 copies: all kept
    assert not any(t.casefold() == ELEVEN_TIMES.casefold() for t in kept_texts)  # 11 copies: all removed
    assert stats["shards"] > 1 and stats["buckets"] == stats["shards"]
    for part in (tmp_path / "out" / "data").glob("*.parquet"):  # each shard sorted by uid
        uids = pq.read_table(part).column("uid").to_pylist()
        assert uids == sorted(uids)


def test_rerun_does_nothing_and_resume_redoes_only_missing_shards(spark, tmp_path):
    src = _candidates_stage(tmp_path / "candidates", _texts())
    clean = tmp_path / "clean"
    job.run(spark, src, str(clean), SMALL_SHARDS)
    before = {p: p.stat().st_mtime_ns for p in clean.rglob("*") if p.is_file()}
    job.run(spark, src, str(clean), SMALL_SHARDS)
    assert before == {p: p.stat().st_mtime_ns for p in clean.rglob("*") if p.is_file()}

    partial = tmp_path / "partial"
    shutil.copytree(clean, partial)
    (partial / "_SUCCESS").unlink()
    (partial / "_stats.json").unlink()
    (partial / "_shards/part-i000001.json").unlink()  # one input shard and one bucket shard lost
    (partial / "_work/checked/part-i000001.parquet").unlink()
    bucket = sorted((partial / "_shards").glob("part-b*.json"))[0]
    bucket.unlink()
    (partial / "data" / (bucket.stem + ".parquet")).unlink()
    (partial / "data/.tmp-123-part-b00001.parquet").write_bytes(b"half a file")
    untouched = partial / "_work/checked/part-i000000.parquet"
    mtime = untouched.stat().st_mtime_ns

    stats = job.run(spark, src, str(partial), SMALL_SHARDS)
    assert untouched.stat().st_mtime_ns == mtime
    a, b = StageDir(str(clean), "filter_text"), StageDir(str(partial), "filter_text")
    assert _sorted(a.read(table=TEXT_OK)) == _sorted(b.read(table=TEXT_OK))
    assert _sorted(a.read("rejected")) == _sorted(b.read("rejected"))
    assert {k: v for k, v in stats.items() if k != "elapsed_seconds"} == {
        k: v for k, v in a.stats().items() if k != "elapsed_seconds"
    }
    assert not list(partial.rglob(".tmp-*"))


def test_thresholds_come_from_the_config(spark, tmp_path):
    src = _candidates_stage(tmp_path / "candidates", _texts(), files=1)
    config = Config(filter_text=FilterTextOptions(rules=TextRules(max_frequency=0, min_words=1)))
    stats = job.run(spark, src, str(tmp_path / "out"), config)
    assert "frequent_text" not in stats["rejected"] and "too_few_words" not in stats["rejected"]
    assert stats["config"]["filter_text"]["rules"]["max_frequency"] == 0


def test_unfinished_input_stage_is_a_clear_error(spark, tmp_path):
    src = _candidates_stage(tmp_path / "candidates", ["A red sports car parked on the street"], files=1)
    (tmp_path / "candidates/_SUCCESS").unlink()
    with pytest.raises(InputNotReadyError, match="no _SUCCESS"):
        job.run(spark, src, str(tmp_path / "out"), SMALL_SHARDS)
    with pytest.raises(InputNotReadyError, match="not found"):
        job.run(spark, str(tmp_path / "nope"), str(tmp_path / "out"), SMALL_SHARDS)


def test_s3_input_and_output_through_a_moto_server(spark, tmp_path, s3_server, s3_bucket):
    bucket, client = s3_bucket
    src = _candidates_stage(tmp_path / "candidates", _texts()[:120] + [TEN_TIMES] * 11, files=2)
    for path in sorted((tmp_path / "candidates").rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"candidates/{path.relative_to(tmp_path / 'candidates').as_posix()}")
    config = Config(storage=s3_server, filter_text=FilterTextOptions(rows_per_shard=40))
    remote = job.run(spark, f"s3://{bucket}/candidates", f"s3://{bucket}/runs/filter_text", config)
    local = job.run(spark, src, str(tmp_path / "local"), config)
    assert {k: remote[k] for k in ("rows_in", "rows_out", "rejected")} == {k: local[k] for k in ("rows_in", "rows_out", "rejected")}
    s3_stage = StageDir(f"s3://{bucket}/runs/filter_text", "filter_text", s3_server)
    assert _sorted(s3_stage.read(table=TEXT_OK)) == _sorted(StageDir(str(tmp_path / "local"), "filter_text").read(table=TEXT_OK))
