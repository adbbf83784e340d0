"""The report's histogram columns come from the annotated schema, not from a list of their own."""

from __future__ import annotations

from jobs.stages.report import HISTOGRAM_COLUMNS
from models.registry import SCORE_COLUMNS
from schemas import ANNOTATED


def test_histogram_columns_are_the_annotated_columns_flagged_for_one_in_schema_order():
    assert list(HISTOGRAM_COLUMNS) == [c.name for c in ANNOTATED.columns if c.histogram] == [
        "width", "height", "clip_similarity_vitb32", "clip_similarity_vitl14", "nsfw_score_opennsfw2",
        "nsfw_score_gantman", "watermark_score", "aesthetic_score_laion_v2",
    ]  # fmt: skip


def test_every_histogram_score_column_is_a_float_score_column_of_the_schema():
    drawn = [c for c in HISTOGRAM_COLUMNS if c in SCORE_COLUMNS]
    float_scores = [c for c in SCORE_COLUMNS if ANNOTATED.column(c).kind.startswith("float")]
    assert drawn == [c for c in float_scores if c != "nsfw_score_nudenet"]
    assert set(HISTOGRAM_COLUMNS) - set(SCORE_COLUMNS) == {"width", "height"}
