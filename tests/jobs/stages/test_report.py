"""The run report: funnel numbers equal _stats.json, histograms, preset counts, samples, escaping."""

from __future__ import annotations

import hashlib
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.stages.config import load_config
from jobs.stages.report import (
    HISTOGRAM_COLUMNS,
    DuckDBEngine,
    histogram_counts,
    render,
    stage_order,
    thumbnail,
    write_report,
)
from curation.stage import StageDir, rejected_table
from filters.presets import builtin_presets
from schemas import ANNOTATED, CANDIDATES, FETCHED
from tests.conftest import annotated_row, photo_files

EVIL_CAPTION = '<script>alert("caption")</script> a red bicycle'
EVIL_URL = 'https://img.example.com/x.jpg?"><script>alert(1)</script>'
EVIL_DETAIL = "<img src=x onerror=alert(1)>"


def uid(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


def write_stage(root: Path, name: str, kept: pa.Table, rejected: list[tuple[int, str, str | None]], rows_in: int) -> dict:
    stage = StageDir(str(root / name), name)
    stage.prepare()
    rows = [{"uid": uid(i), "reason": reason, "detail": detail} for i, reason, detail in rejected]
    stage.write_shard("part-00000", kept, rejected_table(rows, name), rows_in=rows_in)
    return stage.finalize(config={}, started=time.time())


def candidate(i: int) -> dict:
    text = EVIL_CAPTION if i == 5 else f"caption {i} of a quiet harbour"
    url = EVIL_URL if i == 6 else f"https://img.example.com/{i}.jpg"
    return {"uid": uid(i), "url": url, "text": text, "page_url": "https://example.com/", "source_file": "a.warc.wat.gz"}


def build_run(root: Path, photos: list[bytes]) -> dict[str, dict]:
    """extract 40 -> 30 -> download 24 -> dedup 20 -> annotate 20, each with its rejected rows."""
    stats = {}
    extracted = list(range(30))
    stats["extract"] = write_stage(
        root, "extract", CANDIDATES.from_pylist([candidate(i) for i in extracted]),
        [(i, "empty_alt", None) for i in range(30, 36)] + [(i, "invalid_url", EVIL_DETAIL) for i in range(36, 40)], 40,
    )
    fetched = extracted[:24]
    fetched_rows = [
        {**candidate(i), "status": "success", "error_message": None, "width": 800, "height": 600,
         "image_bytes": photos[i % len(photos)], "image_format": "jpeg", "bytes_original": 1000}
        for i in fetched
    ]
    stats["download"] = write_stage(
        root, "download", FETCHED.from_pylist(fetched_rows),
        [(i, "failed_to_download", "HTTP 404") for i in range(24, 28)] + [(i, "too_small_side", "120x90") for i in (28, 29)], 30,
    )
    unique = fetched[:20]
    stats["dedup"] = write_stage(
        root, "dedup", FETCHED.from_pylist(fetched_rows[:20]), [(i, "duplicate_phash", f"kept {uid(0)}") for i in range(20, 24)], 24,
    )
    rng = np.random.default_rng(3)
    annotated = [
        annotated_row(
            i, uid=uid(i), text=candidate(i)["text"], url=candidate(i)["url"], image_bytes=photos[i % len(photos)],
            width=int(rng.integers(200, 1600)), height=int(rng.integers(200, 1600)),
            word_count=int(rng.integers(3, 30)), num_faces=int(rng.integers(0, 3)),
            clip_similarity_vitb32=float(rng.uniform(0.15, 0.45)), aesthetic_score_laion_v2=float(rng.uniform(3, 7)),
            watermark_score=float(rng.uniform(0, 1)) if i != 7 else None,
        )
        for i in unique
    ]
    annotated[5].update(width=1200, height=1200, num_faces=0)  # the <script> caption is a non-face sample
    stats["annotate"] = write_stage(root, "annotate", ANNOTATED.from_pylist(annotated), [], 20)
    return stats, annotated


@pytest.fixture(scope="module")
def photos():
    return [data for _, data in photo_files(4)]


@pytest.fixture
def run(tmp_path, photos):
    stats, annotated = build_run(tmp_path / "run", photos)
    cfg = load_config(None, {"report": {"samples": 20}})
    output = tmp_path / "report.html"
    report = write_report(str(tmp_path / "run"), str(output), cfg)
    return stats, annotated, report, output.read_text(encoding="utf-8")


class Elements(HTMLParser):
    """Every start tag's attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def test_funnel_rows_equal_each_stages_stats_json(run):
    stats, _, _, html = run
    page = Elements(html)
    stages = page.find("tr", "stage")
    assert [s["data-stage"] for s in stages] == ["extract", "download", "dedup", "annotate"]
    for row in stages:
        expected = stats[row["data-stage"]]
        assert (int(row["data-rows-in"]), int(row["data-rows-out"]), int(row["data-rejected"])) == (
            expected["rows_in"], expected["rows_out"], expected["rejected_total"]
        )
    reasons = {(r["data-stage"], r["data-reason"]): int(r["data-count"]) for r in page.find("tr", "reason")}
    assert reasons == {(s, reason): n for s, st in stats.items() for reason, n in st["rejected"].items()}
    assert reasons[("download", "failed_to_download")] == 4


def test_histograms_count_every_non_null_value(run):
    _, annotated, report, html = run
    assert [h.column for h in report.histograms] == list(HISTOGRAM_COLUMNS)
    for h in report.histograms:
        assert h.counts.sum() == sum(1 for r in annotated if r[h.column] is not None), h.column
    watermark = next(h for h in report.histograms if h.column == "watermark_score")
    assert watermark.counts.sum() == 19  # watermark_score has one null
    images = Elements(html).find("img", "histogram")
    assert [i["data-column"] for i in images] == list(HISTOGRAM_COLUMNS)
    assert all(i["src"].startswith("data:image/png;base64,") for i in images)


def test_histogram_bins_match_numpy():
    values = np.random.default_rng(0).normal(5, 1, 5000).astype(np.float32)
    engine = DuckDBEngine.for_table(pa.table({"x": pa.array(list(values) + [None, np.nan, np.inf], pa.float32())}))
    edges, counts = histogram_counts(engine, "x", 25)
    assert np.array_equal(counts, np.histogram(values.astype(np.float64), bins=edges)[0])


def test_preset_keep_counts_and_sample_thumbnails(run):
    _, annotated, report, html = run
    f32 = np.float32
    expected = {
        "non-face": [r for r in annotated if r["width"] > 256 and r["height"] > 256 and r["num_faces"] == 0],
        "high-resolution": [r for r in annotated if r["width"] > 1024 and r["height"] > 1024],
        "high-quality": [
            r for r in annotated
            if r["width"] > 320 and r["height"] > 320 and r["word_count"] > 10 and f32(r["clip_similarity_vitb32"]) > f32(0.3)
        ],
        "image-generation": [
            r for r in annotated
            if r["width"] > 512 and r["height"] > 512 and f32(r["aesthetic_score_laion_v2"]) > f32(5.0)
            and r["watermark_score"] is not None and f32(r["watermark_score"]) < f32(0.5)
        ],
    }
    page = Elements(html)
    assert {p["data-preset"]: int(p["data-kept"]) for p in page.find("tr", "preset")} == {k: len(v) for k, v in expected.items()}
    for preset in report.presets:
        assert [s.uid for s in preset.samples] == sorted(r["uid"] for r in expected[preset.name])
        assert all(s.thumbnail and s.thumbnail.startswith("data:image/jpeg;base64,") for s in preset.samples)
    assert sum(len(v) for v in expected.values()) == len(page.find("img", "thumb")) - 4  # + dedup's 4 rejected


def test_rejection_samples_show_the_row_as_the_previous_stage_had_it(run):
    _, _, report, _ = run
    by_reason = {(r.stage, r.reason): r for r in report.rejections}
    assert set(by_reason) == {
        ("extract", "empty_alt"), ("extract", "invalid_url"), ("download", "failed_to_download"),
        ("download", "too_small_side"), ("dedup", "duplicate_phash"),
    }
    dup = by_reason[("dedup", "duplicate_phash")]
    assert dup.count == 4 and all(s.thumbnail and s.text for s in dup.samples)  # download stored the images
    failed = by_reason[("download", "failed_to_download")]
    assert all(s.text and s.thumbnail is None and s.detail == "HTTP 404" for s in failed.samples)  # extract has no images
    assert [s.text for s in by_reason[("extract", "empty_alt")].samples] == [None] * 6  # nothing before extract


def test_captions_urls_and_details_are_escaped_and_the_page_loads_nothing(run):
    _, _, _, html = run
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;caption&#34;)&lt;/script&gt; a red bicycle" in html
    assert "x.jpg?&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    page = Elements(html)
    assert all(attrs["src"].startswith("data:image/") for tag, attrs in page.tags if "src" in attrs)
    assert not [t for t, a in page.tags if t in ("link", "script", "iframe")]


def test_the_report_is_deterministic(run, tmp_path):
    _, _, _, html = run
    again = write_report(str(tmp_path / "run"), str(tmp_path / "again.html"), load_config(None, {"report": {"samples": 20}}))
    assert render(again) == html


def test_a_run_with_only_extract_still_gets_a_report(tmp_path):
    write_stage(tmp_path / "run", "extract", CANDIDATES.from_pylist([candidate(i) for i in range(3)]), [(9, "empty_alt", None)], 4)
    report = write_report(str(tmp_path / "run"), str(tmp_path / "run" / "report.html"), load_config())
    html = (tmp_path / "run" / "report.html").read_text()
    assert [s.name for s in report.stages] == ["extract"] and report.histograms == [] and report.presets == []
    assert "no stage holds annotated rows yet" in html and 'data-rows-out="3"' in html


def test_a_missing_run_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found: .*nope"):
        write_report(str(tmp_path / "nope"), str(tmp_path / "r.html"), load_config())


def test_stage_order_follows_the_manifest_then_the_funnel():
    stats = {"b": {"rows_in": 50}, "a": {"rows_in": 100}, "c": {"rows_in": 80}, "d": {"rows_in": 80}}
    assert stage_order(stats, []) == ["a", "c", "d", "b"]
    assert stage_order(stats, ["c", "x", "a"]) == ["c", "a", "d", "b"]


def test_a_custom_preset_on_a_column_the_run_lacks_is_reported_not_fatal(tmp_path, photos):
    build_run(tmp_path / "run", photos)
    presets = {**builtin_presets(), **_custom("[odd.where]\nclip_score = { gt = 0.2 }\n")}
    report = write_report(str(tmp_path / "run"), str(tmp_path / "r.html"), load_config(), presets)
    odd = next(p for p in report.presets if p.name == "odd")
    assert "clip_score" in odd.problem and "n/a: preset" in (tmp_path / "r.html").read_text()


def _custom(text: str):
    from filters.presets import parse_presets

    return parse_presets(text, "custom.toml")


def test_a_run_on_s3_gets_the_same_report(run, tmp_path, s3_bucket, s3_server):
    _, _, _, html = run
    bucket, client = s3_bucket
    for f in sorted((tmp_path / "run").rglob("*")):
        if f.is_file():
            client.upload_file(str(f), bucket, f"run/{f.relative_to(tmp_path / 'run')}")
    cfg = load_config(None, {"report": {"samples": 20}, "storage": {"s3_endpoint_url": s3_server.s3_endpoint_url}})
    write_report(f"s3://{bucket}/run", f"s3://{bucket}/run/report.html", cfg)
    on_s3 = client.get_object(Bucket=bucket, Key="run/report.html")["Body"].read().decode()
    assert on_s3 == html.replace(str(tmp_path / "run"), f"s3://{bucket}/run")


def test_thumbnail_of_hostile_bytes_is_none():
    assert thumbnail(b"\x89PNG\r\n\x1a\n garbage", 64) is None
    assert thumbnail(None, 64) is None


def test_stats_json_written_by_finalize_is_what_the_report_reads(run, tmp_path):
    stats, _, report, _ = run
    on_disk = json.loads((tmp_path / "run" / "dedup" / "_stats.json").read_text())
    dedup = next(s for s in report.stages if s.name == "dedup")
    assert (dedup.rows_in, dedup.rows_out, dedup.rejected) == (on_disk["rows_in"], on_disk["rows_out"], on_disk["rejected"])
