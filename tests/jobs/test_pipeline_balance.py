"""`curation pipeline` with the balance stage on the embedded sample (configs/sample.toml, small): balance
reads filter-text, download reads balance, the chain rows_in(next) == rows_out(previous) holds across
it, and the run's report draws balance's entry-frequency chart from its _stats.json."""

from __future__ import annotations

import json
import socket
from html.parser import HTMLParser

import pytest

from curation.stage import REJECTED_DIR, StageDir
from jobs import pipeline
from jobs.stages.config import load_config
from jobs.stages.report import REPORT_NAME, entry_frequency_bins
from schemas import UID
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.spark]
STAGES = ["extract", "filter-text", "balance", "download"]
# words of the sample's captions: "in" and "the" in many rows each, places, scenes and products in a few
ENTRIES = ["in", "the", "Paris", "Amsterdam", "Kyoto", "Lisbon", "sunset", "for sale", "quiet street", "chair", "sofa",
           "never in a caption"]
T = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Charts(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__()
        self.charts: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "img" and "entry-frequency" in (dict(attrs).get("class") or ""):
            self.charts.append(dict(attrs))


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("balanced-run")
    metadata = tmp / "metadata.json"
    metadata.write_text(json.dumps(ENTRIES), encoding="utf-8")
    cfg = load_config(str(REPO / "configs" / "sample.toml"), {
        "pipeline": {"run_root": str(tmp / "run"), "sample_pages": 20, "sample_image_port": _free_port(),
                     "stages": STAGES},
        "extract": {"rows_per_shard": 100},
        "download": {"rows_per_shard": 40, "threads": 8,
                     "fetch": {"allowed_addresses": ["127.0.0.1"], "only_allowed_addresses": True, "timeout_s": 60.0}},
        "balance": {"metadata": str(metadata), "t": T, "after": "filter-text"},
    })
    return tmp / "run", pipeline.run(spark, cfg)


def test_balance_sits_between_filter_text_and_download_and_the_chain_holds(run):
    root, manifest = run
    stages = manifest["stages"]
    assert list(stages) == STAGES
    for prev, nxt in zip(STAGES, STAGES[1:]):
        assert stages[nxt]["rows_in"] == stages[prev]["rows_out"], (prev, nxt)
    for name, s in stages.items():
        assert s["rows_in"] == s["rows_out"] + sum(s["rejected"].values()), name
    balance = stages["balance"]
    assert 0 < balance["rows_out"] < balance["rows_in"]
    assert balance["rejected"]["no_metadata_match"] > 0 and balance["rejected"]["balanced_out"] > 0
    kept = set(StageDir(str(root / "balance"), "balance").read().column(UID).to_pylist())
    downloaded = StageDir(str(root / "download"), "download")
    seen = set(downloaded.read().column(UID).to_pylist()) | set(downloaded.read(REJECTED_DIR).column(UID).to_pylist())
    assert seen == kept  # download fetched exactly the rows balance kept


def test_the_runs_report_draws_the_balance_chart_from_its_stats(run):
    root, _ = run
    stats = StageDir(str(root / "balance"), "balance").stats()["balance"]
    [chart] = _Charts((root / REPORT_NAME).read_text(encoding="utf-8")).charts
    edges, before, after = entry_frequency_bins(stats["rows_per_entry"])
    assert chart["data-stage"] == "balance" and int(chart["data-t"]) == T
    assert [int(v) for v in chart["data-edges"].split()] == edges.tolist()
    assert [int(v) for v in chart["data-before"].split()] == before.tolist()
    assert [int(v) for v in chart["data-after"].split()] == after.tolist()
    assert sum(before) == stats["matched_entries"] and sum(after) == stats["entries_kept"]
