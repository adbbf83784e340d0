"""Where `curation pipeline` runs the optional balance stage and what each stage then reads."""

from __future__ import annotations

from jobs.pipeline import DEFAULT_STAGES, run_order


def test_without_balance_every_stage_reads_its_upstream():
    assert run_order(list(DEFAULT_STAGES), "filter-text") == [
        ("extract", None), ("filter-text", "extract"), ("download", "filter-text"), ("dedup", "download"),
        ("annotate", "dedup"),
    ]


def test_balance_after_filter_text_feeds_download():
    plan = run_order([*DEFAULT_STAGES, "balance"], "filter-text")
    assert plan[2:4] == [("balance", "filter-text"), ("download", "balance")]


def test_balance_after_dedup_feeds_annotate():
    assert run_order([*DEFAULT_STAGES, "balance"], "dedup")[-2:] == [("balance", "dedup"), ("annotate", "balance")]


def test_balance_after_annotate_runs_last_after_semdedup_when_it_runs():
    assert run_order([*DEFAULT_STAGES, "balance"], "annotate")[-1] == ("balance", "annotate")
    assert run_order([*DEFAULT_STAGES, "semdedup", "balance"], "annotate")[-2:] == [
        ("semdedup", "annotate"), ("balance", "semdedup")]
    assert run_order(["balance"], "dedup") == [("balance", "dedup")]
