"""The pipeline's chain check (jobs/pipeline.py): each stage consumed exactly what the stage before it kept."""

from __future__ import annotations

import pytest

from curation.errors import StaleStageError
from jobs.pipeline import check_chain


def _results(**rows: tuple[int, int]) -> dict[str, dict]:
    return {name.replace("_", "-"): {"rows_in": i, "rows_out": o} for name, (i, o) in rows.items()}


def test_stages_that_consumed_exactly_what_the_previous_kept_pass():
    check_chain(_results(extract=(0, 100), filter_text=(100, 80), download=(80, 50), dedup=(50, 45)))


def test_a_next_stage_that_consumed_fewer_rows_than_the_previous_kept_is_stale():
    with pytest.raises(StaleStageError, match="download consumed 79 rows but filter-text now keeps 80"):
        check_chain(_results(extract=(0, 100), filter_text=(100, 80), download=(79, 50)))


def test_a_next_stage_that_consumed_more_rows_than_the_previous_kept_is_stale():
    with pytest.raises(StaleStageError, match="download consumed 81 rows but filter-text now keeps 80"):
        check_chain(_results(extract=(0, 100), filter_text=(100, 80), download=(81, 50)))


def test_the_chain_is_checked_between_the_stages_present_in_pipeline_order():
    # semdedup after annotate; listed out of order, and without the optional stages in between
    check_chain({"semdedup": {"rows_in": 40, "rows_out": 30}, "annotate": {"rows_in": 45, "rows_out": 40}})
    with pytest.raises(StaleStageError, match="semdedup consumed 39 rows but annotate now keeps 40"):
        check_chain({"semdedup": {"rows_in": 39, "rows_out": 30}, "annotate": {"rows_in": 45, "rows_out": 40}})
