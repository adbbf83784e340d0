"""The whole pipeline over the hostile-input corpus (tests/data/hostile, defined by its cases.toml):
no crash, ``rows_in == rows_out + rejected`` at every stage (from _stats.json and from the parquet
rows), and every case ends at the stage and with the Reason its entry names."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobs.stages.config import load_config
from curation.crawl.links import resolve_url
from curation.stage import DATA, REJECTED_DIR, StageDir, count_reasons
from jobs import pipeline
from schemas import Reason
from tests.data.hostile import build

log = logging.getLogger(__name__)

STAGES = list(pipeline.DEFAULT_STAGES)  # extract, filter-text, download, dedup, annotate
KEPT = "kept"
# what the hostile corpus must hold: category -> ids of cases.toml that cover it
REQUIRED = {
    "crawl": ["corrupt-gzip-member", "truncated-record", "content-length-not-a-number", "content-length-missing",
              "invalid-json", "non-utf8-alt", "latin1-in-utf8-page", "megabyte-alt", "thousands-of-links",
              "javascript-scheme", "data-uri", "file-scheme", "ftp-scheme", "idn-host"],
    "image": ["truncated-jpeg", "zero-byte-image", "decompression-bomb", "cmyk-jpeg", "gray16-png", "animated-gif",
              "svg-image", "html-as-image", "exif-rotated"],
    "server": ["http-404", "retry-after-seconds", "retry-after-date", "http-500", "slow-server", "connection-reset",
               "redirect-loop", "redirect-to-private"],
}
CASES = build.load_cases()


# --- the corpus definition (no Spark) ------------------------------------------------------------


def test_the_corpus_has_at_least_40_cases_with_unique_ids_and_known_outcomes():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    for case in CASES:
        assert case["category"] in REQUIRED and case["description"], case["id"]
        assert case["stage"] in STAGES, case["id"]
        assert case["reason"] == KEPT if case["stage"] == "annotate" else case["reason"] in Reason.values(), case["id"]


@pytest.mark.parametrize(("category", "case_id"), [(c, i) for c, ids in REQUIRED.items() for i in ids])
def test_every_kind_of_input_the_issue_names_is_a_case(category, case_id):
    case = next((c for c in CASES if c["id"] == case_id), None)
    assert case is not None and case["category"] == category


@pytest.mark.parametrize("name", sorted(n for n in build.files_of(CASES) if n != "server"))
def test_the_committed_crawl_files_are_what_build_py_writes(name):
    assert (build.HERE / name).read_bytes() == build.crawl_file(name, build.files_of(CASES)[name]), (
        f"{name} is stale: run python -m tests.data.hostile.build"
    )


# --- the pipeline run ----------------------------------------------------------------------------


def _config(root: Path, inputs: list[str]):
    return load_config(None, {
        "pipeline": {"run_root": str(root / "run"), "inputs": inputs},
        "extract": {"rows_per_shard": 1000},
        "filter_text": {"rows_per_shard": 1000},
        "download": {
            "threads": 16, "rows_per_shard": 600, "rules": {"max_bytes": 500_000},
            # slow: 3 s before the first byte > timeout_s; drip: 20 s body > max_transfer_s; retries: one more
            # attempt for transient errors, after the server's Retry-After when it names one <= 5 s
            "fetch": {"timeout_s": 1.0, "max_transfer_s": 1.5, "retries": 1, "retry_backoff_s": 0.1,
                      "max_retry_after_s": 5.0, "allowed_addresses": ["127.0.0.1", "::1"]},
            # one loopback server plays every host of the corpus: host-level back-off and cool-down would
            # couple its rows (tests/jobs/stages/test_download_politeness.py tests them)
            "politeness": {"backoff_max_s": 0.0, "failures_before_cooldown": 0},
        },
        "annotate": {"random_models": str(root / "models"), "device": "cpu", "batch_size": 16, "rows_per_shard": 100},
    })  # fmt: skip


def _uid(link: build.Link) -> str:
    """The uid the extract stage gives the link: md5 of the alt read and the resolved (or raw) URL."""
    base = link.base or link.page_url
    url = resolve_url(link.src, base)[0] or link.src
    return hashlib.md5((link.seen_alt + url).encode("utf-8", "surrogatepass")).hexdigest()


class Run:
    """Every stage's kept and rejected rows of one pipeline run, by uid."""

    def __init__(self, root: Path) -> None:
        self.dirs = {name: StageDir(str(root / name), name) for name in STAGES}
        self.kept = {n: {r["uid"]: r for r in self._rows(d, DATA)} for n, d in self.dirs.items()}
        self.rejected = {n: {} for n in STAGES}
        self.rejected_rows = {n: self._rows(d, REJECTED_DIR) for n, d in self.dirs.items()}
        for name in STAGES:
            for row in self.rejected_rows[name]:
                self.rejected[name].setdefault(row["uid"], row)

    @staticmethod
    def _rows(stage: StageDir, sub: str) -> list[dict]:
        table = stage.read(sub)
        return table.drop_columns([c for c in ("image_bytes",) if c in table.column_names]).to_pylist()

    def fate(self, uid: str) -> tuple[str, str, dict | None]:
        """(stage, reason or "kept", the row) where a uid's row ends."""
        for name in STAGES:
            if uid in self.rejected[name]:
                row = self.rejected[name][uid]
                return name, row["reason"], row
            if uid not in self.kept[name]:
                return name, "vanished", None
        return STAGES[-1], KEPT, self.kept[STAGES[-1]][uid]


def _check_accounting(run: Run) -> None:
    previous_out = None
    for name, stage in run.dirs.items():
        stats = stage.stats()
        assert stage.is_complete(), name
        assert stats["rows_in"] == stats["rows_out"] + sum(stats["rejected"].values()), name
        assert stage.count_rows(DATA) == stats["rows_out"] == len(run.kept[name]), name  # uids are unique
        assert count_reasons(stage.read(REJECTED_DIR)) == stats["rejected"], name
        assert stage.count_rows(REJECTED_DIR) == sum(stats["rejected"].values()), name
        assert set(stats["rejected"]) <= set(Reason.values()), name
        if previous_out is not None:
            assert stats["rows_in"] == previous_out, f"{name} read {stats['rows_in']} rows, its input holds {previous_out}"
        previous_out = stats["rows_out"]


def _check_link_case(run: Run, case: dict, server) -> str:
    host = server.url("")
    links = build.case_links(case, host)
    fates = [run.fate(u) for u in dict.fromkeys(_uid(link) for link in links)]
    ending = [(s, r, row) for s, r, row in fates if (s, r) == (case["stage"], case["reason"])]
    assert len(ending) == case.get("count", 1), (case["id"], [(s, r, row and row.get("detail")) for s, r, row in fates])
    _, reason, row = ending[0]
    uid = _uid(links[0])
    if "detail" in case:
        assert case["detail"] in row["detail"], (case["id"], row["detail"])
    if "url" in case:
        assert run.kept["extract"][uid]["url"] == build.fill(case["url"], host), case["id"]
    if "text" in case:
        assert run.kept["filter-text"][uid]["text"] == case["text"], case["id"]
    if "width" in case:
        kept = run.kept["download"][uid]
        assert (kept["width"], kept["height"]) == (case["width"], case["height"]), case["id"]
    if "waited_s" in case:  # the Retry-After was waited for: the retry came no sooner than it asked
        times = server.arrival_times(urlsplit(build.fill(case["src"], host)).path)
        assert len(times) == 2 and times[1] - times[0] >= case["waited_s"] - 0.05, (case["id"], times)
    summary = reason if reason == KEPT else f"{reason}: {row['detail']}"
    return summary if len(ending) == 1 else f"{len(ending)} x {summary}"


def _check_file_case(run: Run, case: dict) -> str:
    """A broken record or file: rejected rows naming the file (and the broken record), all of them
    at the case's stage (extract) and with its reason, in no other stage."""

    def naming(row: dict) -> bool:
        detail = row["detail"] or ""
        if case.get("kind") in build.RECORD_KINDS:
            return build.record_id(case["id"]) in detail
        return case["file"] in detail

    named = {name: [r for r in rows if naming(r)] for name, rows in run.rejected_rows.items()}
    found = {name: [r for r in rows if r["reason"] == case["reason"]] for name, rows in named.items()}
    assert [name for name, rows in found.items() if rows] == [case["stage"]], (case["id"], case["stage"])
    rows = found[case["stage"]]
    assert {r["stage"] for r in rows} == {case["stage"]}, (case["id"], rows)
    if case.get("kind") in build.RECORD_KINDS:  # the record gives that one rejection, nothing else
        assert sum(named.values(), []) == rows, (case["id"], named)
    assert len(rows) == case.get("count", len(rows)), (case["id"], case["reason"])
    for link in build.case_links(case):  # the broken record's own links never come out
        assert _uid(link) not in run.kept["extract"], (case["id"], link.src)
    return f"{case['reason']}: {rows[0]['detail'].split('#', 1)[-1]}" + (f" (+{len(rows) - 1} more)" if len(rows) > 1 else "")


@pytest.mark.slow
@pytest.mark.spark
def test_the_whole_pipeline_over_the_hostile_corpus(spark, image_server, tmp_path):
    host = image_server.url("")  # http://127.0.0.1:PORT
    (tmp_path / "input").mkdir()
    server_file = build.write_server_file(tmp_path / "input", host, CASES)
    inputs = [str(build.HERE / name) for name in build.files_of(CASES) if name != "server"] + [str(server_file)]
    started = time.monotonic()
    manifest = pipeline.run(spark, _config(tmp_path, inputs))  # no crash
    log.info("hostile pipeline: %.1f s", time.monotonic() - started)

    assert list(manifest["stages"]) == STAGES
    run = Run(tmp_path / "run")
    _check_accounting(run)
    assert run.dirs["extract"].stats()["files"] == len(inputs)
    outcomes = {}
    for case in CASES:
        broken = case.get("kind") in build.BROKEN_KINDS
        got = _check_file_case(run, case) if broken else _check_link_case(run, case, image_server)
        outcomes[case["id"]] = {"category": case["category"], "stage": case["stage"], "outcome": got}
    # the committed files link to TEST-NET-1 only: blocked before any connection, no name ever resolved
    details = [r["detail"] or "" for r in run.rejected["download"].values()]
    assert not any("dns:" in d for d in details)
    (tmp_path / "outcomes.json").write_text(json.dumps(outcomes, indent=1, ensure_ascii=False))
    for case_id, o in outcomes.items():
        log.info("%-28s %-7s %-12s %s", case_id, o["category"], o["stage"], o["outcome"][:140])
