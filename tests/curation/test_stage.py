import json
import os

import pyarrow as pa
import pytest

from curation.stage import AccountingError, StageDir, rejected_table
from schemas import CANDIDATES, Reason


def _kept(n: int) -> pa.Table:
    return CANDIDATES.from_pylist(
        [{"uid": f"{i:032x}", "url": f"http://e.com/{i}.jpg", "text": "a dog", "page_url": None, "source_file": "f"} for i in range(n)]
    )


def test_shard_writes_data_rejected_and_marker_with_counts_from_written_rows(tmp_path):
    stage = StageDir(str(tmp_path / "out"), "test")
    stage.prepare()
    rej = rejected_table([{"uid": "x", "reason": Reason.EMPTY_ALT}, {"uid": "y", "reason": Reason.EMPTY_ALT, "detail": "d"}], "test")
    stats = stage.write_shard("part-00000", _kept(3), rej, rows_in=5)
    assert stats.rows_out == 3 and stats.rejected == {"empty_alt": 2}
    assert (tmp_path / "out/data/part-00000.parquet").exists()
    assert (tmp_path / "out/rejected/part-00000.parquet").exists()
    marker = json.loads((tmp_path / "out/_shards/part-00000.json").read_text())
    assert marker["rows_in"] == 5
    assert not [p for p in (tmp_path / "out").rglob(".tmp-*")]


def test_shard_whose_rows_do_not_add_up_is_refused(tmp_path):
    stage = StageDir(str(tmp_path / "out"), "test")
    stage.prepare()
    with pytest.raises(AccountingError):
        stage.write_shard("part-00000", _kept(3), rejected_table([], "test"), rows_in=4)
    assert not (tmp_path / "out/_shards/part-00000.json").exists()


def test_free_string_reason_is_refused():
    with pytest.raises(ValueError):
        rejected_table([{"uid": "x", "reason": "because"}], "test")


def test_finalize_sums_shards_and_writes_success_last(tmp_path):
    stage = StageDir(str(tmp_path / "out"), "test")
    stage.prepare()
    stage.write_shard("part-00000", _kept(2), rejected_table([{"uid": "a", "reason": Reason.TOO_SHORT}], "test"), rows_in=3)
    stage.write_shard("part-00001", _kept(4), rejected_table([], "test"), rows_in=4)
    assert not stage.is_complete()
    stats = stage.finalize({"k": 1}, started=0.0)
    assert stats["rows_in"] == 7 and stats["rows_out"] == 6 and stats["rejected"] == {"too_short": 1}
    assert stats["config"] == {"k": 1} and stats["elapsed_seconds"] > 0
    assert stage.is_complete() and stage.stats() == stats
    assert stage.read().num_rows == 6


def test_finalize_detects_a_data_file_without_marker(tmp_path):
    stage = StageDir(str(tmp_path / "out"), "test")
    stage.prepare()
    stage.write_shard("part-00000", _kept(2), rejected_table([], "test"), rows_in=2)
    (tmp_path / "out/_shards/part-00000.json").unlink()
    with pytest.raises(AccountingError):
        stage.finalize({}, started=0.0)


def test_prepare_removes_leftover_temp_files_and_overwrite_clears(tmp_path):
    stage = StageDir(str(tmp_path / "out"), "test")
    stage.prepare()
    stage.write_shard("part-00000", _kept(1), rejected_table([], "test"), rows_in=1)
    (tmp_path / "out/data/.tmp-abc-part-00001.parquet").write_bytes(b"partial")
    stage.prepare()
    assert not (tmp_path / "out/data/.tmp-abc-part-00001.parquet").exists()
    assert stage.has_shard("part-00000")
    stage.prepare(overwrite=True)
    assert not stage.has_shard("part-00000")


def test_atomic_write_stores_the_bytes_as_given_whatever_the_name(tmp_path):
    from curation import storage

    data = b"\x1f\x8b already gzip bytes"  # pyarrow's output streams would gzip a *.gz name again
    for name in ("x.warc.wat.gz", "x.json", "x.bz2"):
        storage.write_bytes_atomic(str(tmp_path / name), data)
        assert (tmp_path / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bz2", "x.json", "x.warc.wat.gz"]


@pytest.mark.parametrize("bad", ["../evil", "a/../../evil", "/etc/passwd", "s3://other-bucket/x", "\\\\host\\share"])
def test_no_path_part_can_leave_the_stage_folder(tmp_path, bad):
    from curation import storage

    stage = StageDir(str(tmp_path / "run" / "out"), "test")
    stage.prepare()
    with pytest.raises(storage.PathEscapeError, match="would leave"):
        stage.write_shard(bad, _kept(1), rejected_table([], "test"), rows_in=1)
    with pytest.raises(storage.PathEscapeError):
        storage.join("s3://bucket/run", "dedup", bad)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []  # nothing written anywhere
    assert storage.join("s3://bucket/run", "_work/inputs.json", "a..b") == "s3://bucket/run/_work/inputs.json/a..b"


def test_a_paths_file_line_may_climb_out_of_the_paths_file_folder(tmp_path):
    from curation import storage

    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "a.warc.wat.gz").write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "wat.paths").write_text("../crawl/a.warc.wat.gz\n")
    found = storage.expand_inputs([str(tmp_path / "lists" / "wat.paths")])
    assert len(found) == 1 and os.path.samefile(found[0], tmp_path / "crawl" / "a.warc.wat.gz")
