"""The balance Spark job in local[2] against the in-memory stage (jobs.stages.balance.balance_table):
accounting, the input's schema kept, independence of partitioning, rerun and resume, bad inputs."""

from __future__ import annotations

import json
import random
import shutil

import pyarrow as pa
import pytest

from curation.errors import ConfigError, InputError
from curation.lifecycle import input_files
from curation.stage import SHARDS, SUCCESS, StageDir, rejected_table
from jobs import balance as job
from jobs.stages.balance import balance_table
from jobs.stages.config import BalanceOptions, Config
from schemas import TEXT_OK, UID, Reason

pytestmark = pytest.mark.spark
T = 40
HEAD = ["logo", "t-shirt", "click here", "red"]
TAIL = ["Möbius strip", "日本 庭園", "aardvark", "kite surfing"]
FILLER = ["a", "the", "photo", "of", "new", "big", "on", "sale", "with", ",", ".", "!", "x"]


def captions(n: int, seed: int) -> list[str]:
    """Captions where head entries occur in most rows, tail entries in a few, some rows match nothing."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(2, 6))
        if rng.random() < 0.8:
            words.insert(rng.randrange(len(words) + 1), rng.choice(HEAD))
        if rng.random() < 0.03:
            words.insert(rng.randrange(len(words) + 1), rng.choice(TAIL))
        out.append(" ".join(words) + rng.choice(["", ".", "!"]))
    return out


def write_filter_text_output(folder, texts: list[str], files: int) -> pa.Table:
    """A finished filter_text stage folder holding ``texts`` in ``files`` shards; returns all its rows."""
    n = len(texts)
    table = TEXT_OK.conform(pa.table({
        UID: [f"{i:032x}" for i in range(n)], "url": [f"http://img.test/{i}.jpg" for i in range(n)], "text": texts,
        "page_url": ["http://page.test/"] * n, "source_file": ["crawl.warc.gz"] * n, "text_original": [None] * n,
    }))
    stage = StageDir(str(folder), "filter_text")
    stage.prepare()
    bounds = [n * k // files for k in range(files + 1)]
    for k in range(files):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        stage.write_shard(f"part-b{k:05d}", part, _no_rejected(), rows_in=part.num_rows)
    stage.finalize({}, 0.0)
    return table


def _no_rejected() -> pa.Table:
    return rejected_table([], "filter_text")


@pytest.fixture(scope="module")
def entries_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "metadata.json"
    path.write_text(json.dumps(HEAD + TAIL + ["never seen", "U.S."]), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    texts = captions(2400, seed=5)
    root = tmp_path_factory.mktemp("pool")
    table = write_filter_text_output(root / "three", texts, files=3)
    write_filter_text_output(root / "one", texts, files=1)
    return root, table


def _config(entries_file: str, **balance) -> Config:
    return Config(balance=BalanceOptions(metadata=entries_file, t=T, **balance))


@pytest.fixture(scope="module")
def balanced(spark, pool, entries_file, tmp_path_factory):
    """The three-file pool balanced once: (its output folder, the stats of the run)."""
    root, _ = pool
    out = tmp_path_factory.mktemp("balanced") / "balance"
    return out, job.run(spark, [str(root / "three")], str(out), _config(entries_file))


def _kept_uids(folder) -> set[str]:
    return set(StageDir(str(folder), "balance").read().column(UID).to_pylist())


def test_balance_job_matches_the_in_memory_stage_and_accounts_for_every_row(pool, entries_file, balanced):
    _, table = pool
    folder, stats = balanced
    out = StageDir(str(folder), "balance")
    kept, rejected = out.read(), out.read("rejected")
    assert stats["rows_in"] == table.num_rows == stats["rows_out"] + stats["rejected_total"]
    assert set(stats["rejected"]) == {Reason.NO_METADATA_MATCH, Reason.BALANCED_OUT}
    assert kept.schema == table.schema  # the input's own table
    expected_kept, expected_rejected = balance_table(table, tuple(json.load(open(entries_file))), T)
    assert set(kept.column(UID).to_pylist()) == set(expected_kept.column(UID).to_pylist())
    assert sorted(zip(*(rejected.column(c).to_pylist() for c in (UID, "reason", "detail")))) == sorted(
        zip(*(expected_rejected.column(c).to_pylist() for c in (UID, "reason", "detail"))))
    balance = stats["balance"]
    assert balance["entries"] == 10 and balance["unmatchable_entries"] == 1 and balance["matched_entries"] == 8
    before = dict(map(tuple, balance["rows_per_entry"]["before"]["largest"]))
    after = dict(map(tuple, balance["rows_per_entry"]["after"]["largest"]))
    for entry in TAIL:  # matched at most t times: every row kept
        assert after[entry] == before[entry] <= T
    for entry in HEAD:  # flattened, though a rarer entry of the same row can keep it
        assert before[entry] > 5 * T and after[entry] < before[entry] / 3
    assert sum(b["entries"] for b in balance["rows_per_entry"]["before"]["histogram"]) == 8
    assert stats["input_stage"] == "filter_text"


def test_the_kept_rows_depend_neither_on_partitioning_nor_on_reruns(spark, pool, entries_file, balanced, tmp_path):
    root, _ = pool
    folder, stats = balanced
    config = _config(entries_file)
    job.run(spark, [str(root / "one")], str(tmp_path / "b"), config)
    assert _kept_uids(folder) == _kept_uids(tmp_path / "b")
    assert job.run(spark, [str(root / "three")], str(folder), config) == stats  # complete: nothing to do
    job.run(spark, [str(root / "three")], str(tmp_path / "c"), _config(entries_file, seed=1))
    assert _kept_uids(tmp_path / "c") != _kept_uids(folder)


def test_a_resumed_run_redoes_only_the_missing_shard_and_gives_the_same_rows(spark, pool, entries_file, balanced, tmp_path):
    root, _ = pool
    out = tmp_path / "balance"
    shutil.copytree(balanced[0], out)
    full = balanced[1]
    uids = _kept_uids(out)
    (out / SUCCESS).unlink()
    (out / SHARDS / "part-i000001.json").unlink()
    (out / "data" / "part-i000001.parquet").unlink()
    kept_before = {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    resumed = job.run(spark, [str(root / "three")], str(out), _config(entries_file))
    assert _kept_uids(out) == uids
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir() if p.name in kept_before} == kept_before
    assert {k: resumed[k] for k in ("rows_in", "rows_out", "rejected", "balance")} == {
        k: full[k] for k in ("rows_in", "rows_out", "rejected", "balance")}


def test_balance_refuses_another_stage_a_missing_list_and_no_list(spark, pool, entries_file, tmp_path):
    root, _ = pool
    other = StageDir(str(tmp_path / "extract"), "extract")
    other.prepare()
    other.write_shard("part-b00000", pa.table({UID: ["u"], "text": ["logo"]}), _no_rejected(), rows_in=1)
    other.finalize({}, 0.0)
    with pytest.raises(InputError, match="output of stage extract"):
        job.run(spark, [other.uri], str(tmp_path / "o1"), _config(entries_file))
    with pytest.raises(InputError, match="no entry list"):
        job.run(spark, [str(root / "one")], str(tmp_path / "o2"), _config(str(tmp_path / "absent.json")))
    with pytest.raises(ConfigError, match="--metadata"):
        job.run(spark, [str(root / "one")], str(tmp_path / "o3"), Config())


def test_a_balance_output_is_read_as_the_stage_it_balanced(spark, entries_file, balanced, tmp_path):
    stats = job.run(spark, [str(balanced[0])], str(tmp_path / "second"), _config(entries_file))
    assert stats["input_stage"] == "filter_text"
    assert stats["rows_in"] == balanced[1]["rows_out"]


def test_the_stage_after_balance_reads_its_output_as_the_stage_balance_read(balanced):
    from jobs import download
    from jobs.dedup import job as dedup

    assert input_files(download.SPEC, [str(balanced[0])]) == StageDir(str(balanced[0]), "balance").files()
    with pytest.raises(InputError, match="output of stage filter_text"):
        input_files(dedup.SPEC, [str(balanced[0])])
