"""Reruns never leave a stage built from an older version of its input.

A real rerun after transient download failures (a loopback server that answers 503 to the first request
of each image) and a rerun after one upstream shard was edited: the pipeline redoes every later stage, or,
with ``[pipeline] redo_stale = false``, stops naming the stale stage and the flag that redoes it. After
every run rows_in(next) == rows_out(previous) for consecutive stages."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.stages.config import load_config
from curation.errors import StaleStageError
from curation.sample.crawl_files import write_sample
from curation.stage import StageDir
from jobs import pipeline
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ORDER = list(pipeline.DEFAULT_STAGES)


def _config(tmp_path, crawl: str, **pipeline_keys):
    return load_config(
        str(REPO / "configs" / "sample.toml"),
        {
            "pipeline": {"run_root": str(tmp_path / "run"), "sample": False, "inputs": [crawl], **pipeline_keys},
            "annotate": {"random_models": str(tmp_path / "models"), "rows_per_shard": 20},
            # one loopback server plays every host: no host back-off or cool-down, or rows cooled without a
            # request would meet the server's "first request fails" on the rerun instead
            "download": {"rows_per_shard": 20, "threads": 8,
                         "politeness": {"backoff_max_s": 0.0, "failures_before_cooldown": 0}},
            "dedup": {"rules": {"mode": "exact"}},
        },
    )


def _transient(tmp_path) -> int:
    """Rows the download stage failed with a transient error (what a rerun retries)."""
    return StageDir(str(tmp_path / "run" / "download"), "download").stats()["transient"]


def _chain(manifest: dict) -> list[tuple[int, int]]:
    return [(manifest["stages"][s]["rows_in"], manifest["stages"][s]["rows_out"]) for s in ORDER]


def _assert_chained(manifest: dict) -> None:
    counts = _chain(manifest)
    for (_, out), (nxt_in, _) in zip(counts, counts[1:]):
        assert nxt_in == out, counts


def test_rerun_after_transient_failures_redoes_the_later_stages(spark, image_server, tmp_path):
    # every image link of the crawl points at /flaky/...: 503 on the first request, a photo afterwards
    crawl = tmp_path / "crawl"
    write_sample(str(crawl), pages=30, image_host=image_server.url(f"/flaky/{tmp_path.name}"))
    first = pipeline.run(spark, _config(tmp_path, str(crawl)))
    _assert_chained(first)
    download = first["stages"]["download"]
    # each loopback image URL failed on its first request (a URL several rows share succeeds for the later
    # ones); links to other hosts are blocked
    failed = _transient(tmp_path)
    assert failed > 0 and first["stages"]["dedup"]["rows_in"] == download["rows_out"]

    strict = _config(tmp_path, str(crawl), redo_stale=False)
    with pytest.raises(StaleStageError, match=r"dedup at .*run/dedup cannot be reused: .*--overwrite"):
        pipeline.run(spark, strict)  # download retried its transient rows, so dedup's input changed

    again = pipeline.run(spark, _config(tmp_path, str(crawl)))
    _assert_chained(again)
    fetched = download["rows_out"] + failed  # every transient row fetched on the retry
    assert again["stages"]["download"]["rows_out"] == fetched and _transient(tmp_path) == 0
    assert again["stages"]["dedup"]["rows_in"] == fetched
    assert again["stages"]["annotate"]["rows_out"] >= 1
    recorded = json.loads((tmp_path / "run" / "_manifest.json").read_text())
    assert _chain(recorded) == _chain(again)


def test_editing_an_upstream_shard_redoes_what_was_built_from_it(spark, image_server, tmp_path):
    crawl = tmp_path / "crawl"
    write_sample(str(crawl), pages=30, image_host=image_server.url("/photo"))
    cfg = _config(tmp_path, str(crawl))
    first = pipeline.run(spark, cfg)
    _assert_chained(first)
    assert first["stages"]["annotate"]["rows_out"] > 0
    untouched = pipeline.run(spark, cfg)  # nothing changed: every stage is reused as it is
    assert _chain(untouched) == _chain(first)
    assert all(untouched["stages"][s].get("input_fingerprint") == first["stages"][s].get("input_fingerprint") for s in ORDER)

    # edit the caption of one row that reached the end, in its filter-text shard (same row count)
    uid = StageDir(str(tmp_path / "run" / "annotate"), "annotate").read().column("uid")[0].as_py()
    text_ok = StageDir(str(tmp_path / "run" / "filter-text"), "filter_text")
    shard = next(f for f in text_ok.files() if uid in pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
    rows = pq.read_table(shard).to_pylist()
    for row in rows:
        if row["uid"] == uid:
            row["text"] = "an edited caption of a bicycle leaning on a wall"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(shard)), shard)

    with pytest.raises(StaleStageError, match=r"download at .*run/download cannot be reused"):
        pipeline.run(spark, _config(tmp_path, str(crawl), redo_stale=False))
    again = pipeline.run(spark, cfg)
    _assert_chained(again)
    assert _chain(again) == _chain(first)
    annotated = StageDir(str(tmp_path / "run" / "annotate"), "annotate").read().to_pylist()
    assert [r["text"] for r in annotated if r["uid"] == uid] == ["an edited caption of a bicycle leaning on a wall"]
