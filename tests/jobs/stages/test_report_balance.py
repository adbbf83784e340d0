"""The report's entry-frequency chart of a balance stage: drawn from its _stats.json (before and after, on
log axes), present only when the run holds a balance folder."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from curation.stage import StageDir
from filters.balance import count_entries, matcher_for
from jobs.stages.balance import ENTRIES, STAGE, entry_stats, split_rows
from jobs.stages.config import Config
from jobs.stages.report import entry_frequency_bins, entry_frequency_figure, write_report
from schemas import CANDIDATES, UID
from tests.jobs.stages.test_report import Elements, candidate, write_stage

T = 3
ENTRY_LIST = ("harbour", "quiet", "boat", "lighthouse", "never seen")


def _captions(n: int) -> list[str]:
    """'harbour' in every caption, 'quiet' in every other, 'boat' in every fifth, 'lighthouse' in two."""
    out = []
    for i in range(n):
        words = ["a", "harbour"] + (["quiet"] if i % 2 else []) + (["boat"] if i % 5 == 0 else [])
        out.append(" ".join(words + (["lighthouse"] if i in (3, 4) else [])) + ".")
    return out


def _balance_folder(root, rows: pa.Table) -> dict:
    """A finished balance folder over ``rows``, built with the stage's own split and statistics."""
    matcher = matcher_for(ENTRY_LIST)
    matches = pa.table({UID: rows.column(UID),
                        ENTRIES: pa.array(matcher.match_many(rows.column("text").to_pylist()), pa.list_(pa.int32()))})
    before = count_entries(matches.column(ENTRIES).to_pylist(), len(ENTRY_LIST))
    kept, rejected, kept_entries = split_rows(rows, matches, before, ENTRY_LIST, T, seed=0)
    after = np.bincount(kept_entries, minlength=len(ENTRY_LIST))
    stage = StageDir(str(root / "balance"), STAGE)
    stage.prepare()
    stage.write_shard("part-i000000", kept, rejected, rows_in=rows.num_rows)
    return stage.finalize({}, time.time(), extra=entry_stats(before, after, ENTRY_LIST, T, 0, "extract"))


def _extract(root, n: int) -> pa.Table:
    rows = CANDIDATES.from_pylist([{**candidate(i), "text": t} for i, t in enumerate(_captions(n))])
    write_stage(root, "extract", rows, [], n)
    return rows


def test_a_balance_folder_gets_the_chart_with_the_numbers_of_its_stats(tmp_path):
    root = tmp_path / "run"
    stats = _balance_folder(root, _extract(root, 40))
    report = write_report(str(root), str(tmp_path / "report.html"), Config())
    html = (tmp_path / "report.html").read_text(encoding="utf-8")

    # 40 rows of 'harbour' (bin 32..63), 20 of 'quiet' (16..31), 8 of 'boat' (8..15), 2 of 'lighthouse' (2..3)
    assert stats["balance"]["rows_per_entry"]["before"]["histogram"] == [
        {"min": 1, "max": 1, "entries": 0}, {"min": 2, "max": 3, "entries": 1}, {"min": 4, "max": 7, "entries": 0},
        {"min": 8, "max": 15, "entries": 1}, {"min": 16, "max": 31, "entries": 1}, {"min": 32, "max": 63, "entries": 1},
    ]
    [chart] = report.entry_frequency
    after = {b["min"]: b["entries"] for b in stats["balance"]["rows_per_entry"]["after"]["histogram"]}
    assert chart.stage == "balance" and chart.t == T
    assert chart.edges.tolist() == [1, 2, 4, 8, 16, 32, 64]
    assert chart.before.tolist() == [0, 1, 0, 1, 1, 1]
    assert chart.after.tolist() == [after.get(low, 0) for low in chart.edges[:-1]]
    assert chart.after.sum() == stats["balance"]["entries_kept"]

    [img] = Elements(html).find("img", "entry-frequency")
    assert img["data-stage"] == "balance" and img["data-t"] == str(T)
    assert img["data-edges"].split() == [str(e) for e in chart.edges]
    assert [int(v) for v in img["data-before"].split()] == chart.before.tolist()
    assert [int(v) for v in img["data-after"].split()] == chart.after.tolist()
    assert img["src"].startswith("data:image/png;base64,") and 'id="balance"' in html


def test_the_figure_draws_both_histograms_on_log_axes():
    rows_per_entry = {
        "before": {"histogram": [{"min": 1, "max": 1, "entries": 7}, {"min": 2, "max": 3, "entries": 0},
                                 {"min": 4, "max": 7, "entries": 2}]},
        "after": {"histogram": [{"min": 1, "max": 1, "entries": 8}, {"min": 2, "max": 3, "entries": 1}]},
    }
    edges, before, after = entry_frequency_bins(rows_per_entry)
    assert (edges.tolist(), before.tolist(), after.tolist()) == ([1, 2, 4, 8], [7, 0, 2], [8, 1, 0])
    ax = entry_frequency_figure("balance", 2, edges, before, after).axes[0]
    drawn = [p.get_data() for p in ax.patches]
    assert [d.values.tolist() for d in drawn] == [[7, 0, 2], [8, 1, 0]]
    assert all(d.edges.tolist() == [1, 2, 4, 8] for d in drawn)
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")


def test_a_run_without_a_balance_folder_has_no_chart(tmp_path):
    root = tmp_path / "run"
    _extract(root, 12)
    report = write_report(str(root), str(tmp_path / "report.html"), Config())
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert report.entry_frequency == []
    assert not Elements(html).find("img", "entry-frequency") and 'id="balance"' not in html
