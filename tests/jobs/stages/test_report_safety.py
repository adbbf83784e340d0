"""The report's safety section: rows rejected per list, configured lists with none, and no sample (caption,
URL or thumbnail) of a blocklisted row."""

from __future__ import annotations

from filters.safety import SafetyList, SafetyOptions
from jobs.stages.config import Config
from jobs.stages.report import write_report
from schemas import CANDIDATES, FETCHED
from tests.jobs.stages.test_report import candidate, write_stage


def test_report_counts_rows_per_safety_list_and_shows_none_of_them(tmp_path):
    root = tmp_path / "run"
    listed = {10: "safety list urls (url_md5)", 11: "safety list urls (url_md5)", 12: "safety list ncmec (image_md5)"}
    captions = {i: f"listed caption {i}" for i in listed}
    rows = [{**candidate(i), "text": captions.get(i, candidate(i)["text"])} for i in range(14)]
    write_stage(root, "extract", CANDIDATES.from_pylist(rows), [(20, "empty_alt", None)], 15)
    reasons = {10: "blocklisted_url", 11: "blocklisted_url", 12: "blocklisted_image", 13: "not_decodable"}
    rejected = [(i, reasons[i], listed.get(i, "cannot decode")) for i in (10, 11, 12, 13)]
    write_stage(root, "download", FETCHED.from_pylist([{**candidate(i), "status": "success"} for i in range(10)]), rejected, 14)
    lists = SafetyOptions(tuple(SafetyList(n, f"/lists/{n}.txt", k) for n, k in
                                [("urls", "url_md5"), ("ncmec", "image_md5"), ("quiet", "image_sha256")]))
    report = write_report(str(root), str(tmp_path / "report.html"), Config(safety=lists))
    html = (tmp_path / "report.html").read_text()

    assert report.safety == [("ncmec", "image_md5", 1), ("quiet", "image_sha256", 0), ("urls", "url_md5", 2)]
    assert 'data-list="urls" data-count="2"' in html and 'data-list="quiet" data-count="0"' in html
    for i in listed:
        assert captions[i] not in html and candidate(i)["url"] not in html  # never sampled
    assert candidate(13)["url"] in html  # other rejections still are
    assert "/lists/" not in html  # nor where a list lives
