"""The download stage end to end against the loopback server: every reason, the accounting, Spark ==
local, reruns that retry only transient failures, the SSRF guard at stage level, and the CLI."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from jobs.stages.config import Config, DownloadOptions
from jobs.stages.download import WorkItem, plan_work, read_rows
from curation.fetch.http import FetchOptions, is_transient
from curation.lifecycle import InputNotReadyError
from curation.fetch.politeness import PolitenessOptions
from curation.stage import StageDir
from filters.image import ImageRules
from jobs import download as job
from jobs.cli import app
from schemas import FETCHED, TEXT_OK, Reason

pytestmark = pytest.mark.spark

FETCH = FetchOptions(timeout_s=0.5, max_transfer_s=2.0, allowed_addresses=("127.0.0.1",))
OPTS = DownloadOptions(rules=ImageRules(max_bytes=500_000), fetch=FETCH, threads=8, rows_per_shard=7)

# path on the loopback server (or a full URL) -> the reason its row must end with (None: kept)
EXPECTED = {
    "/gen/photo.jpg": None,
    "/gen/cmyk.jpg": None,
    "/gen/rotated.jpg": None,
    "/gen/palette.png": None,
    "/gen/animated.gif": None,
    "/redirect?to=/gen/photo.jpg": None,
    "/status/404": Reason.FAILED_TO_DOWNLOAD,
    "/status/500": Reason.FAILED_TO_DOWNLOAD,
    "/slow": Reason.FAILED_TO_DOWNLOAD,
    "/redirect?to=http://169.254.169.254/latest/meta-data/": Reason.BLOCKED_ADDRESS,
    "http://10.0.0.1/private.jpg": Reason.BLOCKED_ADDRESS,
    "/robots?tag=noai": Reason.OPTED_OUT,
    "/gen/html.jpg": Reason.NOT_DECODABLE,
    "/gen/truncated.jpg": Reason.NOT_DECODABLE,
    "/gen/zero.jpg": Reason.NOT_DECODABLE,
    "/gen/bomb.png": Reason.DECOMPRESSION_BOMB,
    "/gen/drawing.svg": Reason.UNSUPPORTED_IMAGE,
    "/gen/tiny.jpg": Reason.TOO_SMALL_BYTES,
    "/gen/large.jpg": Reason.TOO_LARGE_BYTES,  # 785 KB > max_bytes 500 KB (Content-Length)
    "/unbounded": Reason.TOO_LARGE_BYTES,  # no Content-Length: cut while reading
    "/gen/small-side.jpg": Reason.TOO_SMALL_SIDE,
    "/gen/panorama.jpg": Reason.ASPECT_RATIO,
}


def _url(server, path: str) -> str:
    return path if path.startswith("http") else server.url(path)


def _row(url: str, n: int) -> dict:
    text = f"a photo number {n}"
    return {"uid": hashlib.md5((text + url).encode()).hexdigest(), "url": url, "text": text,
            "page_url": "http://example.com/page", "source_file": "test.warc.gz", "text_original": f"A photo {n}"}


def make_text_ok(root: Path, urls: list[str], files: int = 2) -> str:
    """A finished filter-text stage folder holding ``urls`` split over ``files`` shards."""
    stage = StageDir(str(root), "filter_text")
    stage.prepare()
    rows = [_row(u, i) for i, u in enumerate(urls)]
    for f in range(files):
        part = TEXT_OK.from_pylist(rows[f::files])
        stage.write_shard(f"part-b{f:05d}", part, pa.table({"uid": [], "stage": [], "reason": [], "detail": []}), part.num_rows)
    stage.finalize({}, 0.0)
    return str(root)


def _run(spark, source: str, out: Path, opts: DownloadOptions = OPTS, **kw) -> dict:
    return job.run(spark, source, str(out), Config(download=opts), **kw)


def _by_uid(stage: StageDir) -> tuple[dict, dict]:
    kept = {r["uid"]: r for r in stage.read(table=FETCHED).to_pylist()}
    rejected = {r["uid"]: r for r in stage.read("rejected").to_pylist()}
    return kept, rejected


def test_every_reason_is_produced_and_every_row_is_accounted_for(spark, image_server, tmp_path):
    urls = [_url(image_server, p) for p in EXPECTED]
    source = make_text_ok(tmp_path / "text_ok", urls)
    stats = _run(spark, source, tmp_path / "out")

    assert stats["rows_in"] == len(urls) == stats["rows_out"] + stats["rejected_total"]
    files = StageDir(source, "filter_text").files()
    planned = plan_work(files, OPTS.rows_per_shard, politeness=OPTS.politeness)  # host lanes, <= 7 rows per shard
    assert stats["shards"] == len(planned) and max(len(i.rows) for i in planned) <= 7
    stage = StageDir(str(tmp_path / "out"), "download")
    kept, rejected = _by_uid(stage)
    for path, reason in EXPECTED.items():
        uid = _row(_url(image_server, path), urls.index(_url(image_server, path)))["uid"]
        if reason is None:
            assert uid in kept and uid not in rejected, path
        else:
            assert rejected[uid]["reason"] == reason, (path, rejected.get(uid))
            assert rejected[uid]["stage"] == "download"
    download_reasons = {Reason.FAILED_TO_DOWNLOAD, Reason.BLOCKED_ADDRESS, Reason.OPTED_OUT, Reason.NOT_DECODABLE,
                        Reason.DECOMPRESSION_BOMB, Reason.UNSUPPORTED_IMAGE, Reason.TOO_SMALL_BYTES,
                        Reason.TOO_LARGE_BYTES, Reason.TOO_SMALL_SIDE, Reason.ASPECT_RATIO}
    assert download_reasons <= set(stats["rejected"])


def test_kept_rows_carry_the_input_columns_original_size_and_resized_image(spark, image_server, tmp_path):
    paths = ["/gen/large.jpg", "/gen/rotated.jpg", "/gen/photo.jpg"]
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in paths], files=1)
    _run(spark, source, tmp_path / "out", DownloadOptions(fetch=FETCH, threads=4))
    rows = {r["url"].rsplit("/", 1)[1]: r for r in StageDir(str(tmp_path / "out"), "download").read(table=FETCHED).to_pylist()}
    assert (rows["large.jpg"]["width"], rows["large.jpg"]["height"]) == (1600, 1200)
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (500, 300)
    for row in rows.values():
        assert row["status"] == "success" and row["error_message"] is None
        assert row["text_original"].startswith("A photo")  # carried through from text_ok
        img = Image.open(io.BytesIO(row["image_bytes"]))
        assert img.format == "JPEG" and row["image_format"] == "jpeg"
        assert min(img.size) == min(384, row["width"], row["height"])
    assert Image.open(io.BytesIO(rows["large.jpg"]["image_bytes"])).size == (512, 384)


def test_transient_failures_are_marked_in_the_detail(spark, image_server, tmp_path):
    paths = ["/status/404", "/status/503", "/slow"]
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in paths], files=1)
    _run(spark, source, tmp_path / "out")
    details = {r["uid"]: r["detail"] for r in StageDir(str(tmp_path / "out"), "download").read("rejected").to_pylist()}
    by_path = {p: details[_row(image_server.url(p), i)["uid"]] for i, p in enumerate(paths)}
    assert by_path["/status/404"] == "HTTP 404 Not Found"
    assert by_path["/status/503"] == "transient: HTTP 503 Service Unavailable"
    assert is_transient(by_path["/slow"]) and "timed out" in by_path["/slow"]


def test_spark_and_local_engines_write_the_same_shards(spark, image_server, tmp_path):
    deterministic = [p for p in EXPECTED if p not in ("/slow",)]
    source = make_text_ok(tmp_path / "text_ok", [_url(image_server, p) for p in deterministic])
    spark_stats = _run(spark, source, tmp_path / "spark")
    local_stats = _run(None, source, tmp_path / "local", replace(OPTS, engine="local", processes=2))
    for key in ("rows_in", "rows_out", "rejected", "shards"):
        assert spark_stats[key] == local_stats[key]
    for sub in ("data", "rejected"):
        a, b = StageDir(str(tmp_path / "spark"), "download"), StageDir(str(tmp_path / "local"), "download")
        assert [Path(f).name for f in a.files(sub)] == [Path(f).name for f in b.files(sub)]
        assert a.read(sub).equals(b.read(sub))


def test_rerun_retries_only_the_rows_that_failed_with_a_transient_error(spark, image_server, tmp_path):
    paths = ["/gen/photo.jpg", "/status/404", "/status/500", "/flaky/rerun-test", "/gen/tiny.jpg"]
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in paths], files=1)
    first = _run(spark, source, tmp_path / "out")
    assert first["transient"] == 2 and first["rows_out"] == 1
    hits = {p: image_server.hits(p.split("?")[0]) for p in paths}

    second = _run(spark, source, tmp_path / "out")
    for path in ("/gen/photo.jpg", "/status/404", "/gen/tiny.jpg"):
        assert image_server.hits(path) == hits[path], f"{path} was fetched again"
    assert image_server.hits("/status/500") == hits["/status/500"] + 1
    assert image_server.hits("/flaky/rerun-test") == hits["/flaky/rerun-test"] + 1
    assert second["rows_in"] == 5 and second["rows_out"] == 2  # the flaky row is now kept
    assert second["transient"] == 1 and second["rows_in"] == second["rows_out"] + second["rejected_total"]
    stage = StageDir(str(tmp_path / "out"), "download")
    kept_urls = stage.read(table=FETCHED).column("url").to_pylist()
    assert kept_urls == [image_server.url("/gen/photo.jpg"), image_server.url("/flaky/rerun-test")]  # input order
    assert stage.is_complete()

    no_retry = replace(OPTS, retry_transient=False)
    _run(spark, source, tmp_path / "out", no_retry)
    assert image_server.hits("/status/500") == hits["/status/500"] + 1


def test_rerun_over_complete_output_without_transient_failures_does_nothing(spark, image_server, tmp_path):
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in ("/gen/photo.jpg", "/status/404")], files=1)
    _run(spark, source, tmp_path / "out")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    _run(spark, source, tmp_path / "out")
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}


def test_without_the_allow_list_the_stage_never_contacts_the_loopback_server(spark, image_server, tmp_path):
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in ("/gen/photo.jpg", "/redirect?to=/x")], files=1)
    before = len(image_server.requests)
    stats = _run(spark, source, tmp_path / "out", DownloadOptions(fetch=FetchOptions(timeout_s=0.5), threads=2))
    assert stats["rejected"] == {"blocked_address": 2}
    assert len(image_server.requests) == before


def test_s3_output_through_a_moto_server(image_server, tmp_path, s3_server, s3_bucket):
    bucket, client = s3_bucket
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in ("/gen/photo.jpg", "/status/503")], files=1)
    opts = replace(OPTS, engine="local", processes=1)
    before = image_server.hits("/status/503")
    stats = job.run(None, source, f"s3://{bucket}/runs/download", Config(storage=s3_server, download=opts))
    assert stats["rows_out"] == 1 and stats["transient"] == 1
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/download/")["Contents"]}
    assert {"runs/download/_SUCCESS", "runs/download/data/part-00000-00000-0000.parquet"} <= keys  # file 0, lane 0, shard 0
    again = job.run(None, source, f"s3://{bucket}/runs/download", Config(storage=s3_server, download=opts))
    assert again["transient"] == 1 and image_server.hits("/status/503") == before + 2  # retried through S3 too


def test_input_must_be_a_finished_stage(spark, tmp_path):
    (tmp_path / "half" / "data").mkdir(parents=True)
    with pytest.raises(InputNotReadyError, match="_SUCCESS"):
        _run(spark, str(tmp_path / "half"), tmp_path / "out")


def test_work_items_slice_input_files_by_rows(image_server, tmp_path):
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(f"/x{i}") for i in range(10)], files=1)
    files = StageDir(source, "filter_text").files()
    items = plan_work(files, 4)
    assert [(i.start, i.stop, i.shard) for i in items] == [(0, 4, "part-00000-00000"), (4, 8, "part-00000-00001"),
                                                           (8, 10, "part-00000-00002")]
    assert read_rows(WorkItem(files[0], 4, 8, "s")).column("url").to_pylist() == [image_server.url(f"/x{i}") for i in range(4, 8)]


def test_cli_download_with_the_local_engine(image_server, tmp_path):
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in ("/gen/photo.jpg", "/status/404")], files=1)
    cfg = tmp_path / "run.toml"
    cfg.write_text('[download.fetch]\nallowed_addresses = ["127.0.0.1"]\ntimeout_s = 1.0\n')
    result = CliRunner().invoke(
        app, ["download", "--input", source, "--output", str(tmp_path / "out"), "--config", str(cfg),
              "--engine", "local", "--processes", "1", "--threads", "2"],
    )
    assert result.exit_code == 0, result.output
    stats = StageDir(str(tmp_path / "out"), "download").stats()
    assert stats["rows_out"] == 1 and stats["rejected"] == {"failed_to_download": 1}


def test_cli_rejects_an_unknown_engine(tmp_path):
    result = CliRunner().invoke(app, ["download", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--engine", "ray"])
    assert result.exit_code == 2
    assert "engine" in result.output


def test_sample_pipeline_serves_its_images_on_loopback_and_downloads_them(spark, tmp_path, monkeypatch):
    """`[pipeline] sample = true`: the sample's links point at the port in the config, the pipeline
    serves the generated images there while its stages run, and only loopback is fetched."""
    import socket

    from jobs.stages.config import load_config
    from jobs import pipeline

    with socket.socket() as s:  # a free port, so a sample run elsewhere on this machine cannot clash
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "sample.toml"),
                      {"pipeline": {"run_root": str(tmp_path / "run"), "sample_pages": 30, "sample_image_port": port,
                                    "stages": ["extract", "filter-text", "download"]}})
    manifest = pipeline.run(spark, cfg)

    stats = manifest["stages"]["download"]
    assert stats["rows_in"] == manifest["stages"]["filter-text"]["rows_out"] > 0
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values())
    assert stats["rows_out"] > 0  # real bytes were fetched from the loopback server
    kept = StageDir(str(tmp_path / "run" / "download"), "download").read(table=FETCHED)
    assert all(u.startswith(f"http://127.0.0.1:{port}/images/") for u in kept.column("url").to_pylist())


@pytest.mark.parametrize("engine", ["spark", "local"])
def test_job_wide_limit_is_tasks_per_host_times_the_per_task_limit(spark, host_servers, tmp_path, engine):
    for server in host_servers:
        server.reset_concurrency()
    big, small, other = host_servers
    urls = ([big.url(f"/gen/photo.jpg?n=job-{i}&delay=0.05") for i in range(60)]
            + [small.url(f"/gen/photo.jpg?n=job-{i}&delay=0.05") for i in range(8)]
            + [other.url(f"/gen/photo.jpg?n=job-{i}") for i in range(8)])
    source = make_text_ok(tmp_path / "text_ok", urls, files=2)
    polite = PolitenessOptions(max_connections_per_host=2, tasks_per_host=1, lanes=4)
    fetch = FetchOptions(timeout_s=20.0, max_transfer_s=30.0, allowed_addresses=("127.0.0.0/8",))  # no timeouts under load
    opts = DownloadOptions(fetch=fetch, threads=16, rows_per_shard=10,
                           engine=engine, processes=2, politeness=polite)
    stats = job.run(spark if engine == "spark" else None, source, str(tmp_path / "out"), Config(download=opts))
    assert stats["rows_in"] == len(urls) == stats["rows_out"] + stats["rejected_total"]
    assert stats["rows_out"] == len(urls)
    assert big.max_concurrent <= 2 * 1  # one lane holds the host: 2 tasks at once, yet never 2 x 2
    stage = StageDir(str(tmp_path / "out"), "download")
    markers = stage.completed_shards()
    assert all(m.rows_in == m.rows_out + m.rejected_total for m in markers.values())
    assert {"backoff_s", "cooled_rows"} <= set(next(iter(markers.values())).extra["politeness"])


def test_a_rerun_with_another_shard_plan_is_refused_and_the_finished_stage_stays_finished(image_server, tmp_path):
    from jobs.stages.download import PlanChangedError

    paths = ["/gen/photo.jpg", "/status/503", "/gen/tiny.jpg"]
    source = make_text_ok(tmp_path / "text_ok", [image_server.url(p) for p in paths], files=1)
    local = replace(OPTS, engine="local", processes=1)
    first = _run(None, source, tmp_path / "out", local)
    assert first["transient"] == 1  # so a rerun would not stop at "complete"
    old_plan = replace(local, politeness=replace(local.politeness, tasks_per_host=0))  # slices: other names
    with pytest.raises(PlanChangedError, match="part-00000-00000-0000"):
        _run(None, source, tmp_path / "out", old_plan)
    assert StageDir(str(tmp_path / "out"), "download").is_complete()
    assert _run(None, source, tmp_path / "out", old_plan, overwrite=True)["rows_in"] == 3
