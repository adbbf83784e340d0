"""Presets: parsing, errors, SQL rendering, and what each keeps at its boundaries (DuckDB on Arrow tables)."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from jobs.stages.select import uid_query
from jobs.stages.preset_query import DuckDBEngine, count
from filters.presets import (
    DUCKDB,
    SPARK,
    KeepFraction,
    PresetError,
    builtin_presets,
    check_columns,
    get_preset,
    load_presets,
    parse_presets,
    render,
)
from schemas import ANNOTATED
from tests.conftest import annotated_row

BUILTIN = builtin_presets()


def f32_above(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def f32_below(x: float) -> float:
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


def select(preset, rows: list[dict]) -> list[int]:
    """ids of the rows ``preset`` keeps, through the real DuckDB engine."""
    table = ANNOTATED.from_pylist(rows)
    engine = DuckDBEngine.for_table(table)
    selection = count(engine, preset, table.schema)
    uids = engine.reader(uid_query(engine, selection.sql), selection.sql.params).read_all().column("uid").to_pylist()
    by_uid = {r["uid"]: r["id"] for r in rows}
    assert selection.rows_out == len(uids) and selection.rows_in == len(rows)
    return sorted(by_uid[u] for u in uids)


def test_the_four_builtin_presets_have_designs_thresholds():
    assert {name: p.describe() for name, p in BUILTIN.items()} == {
        "non-face": ["width > 256", "height > 256", "num_faces == 0"],
        "high-resolution": ["width > 1024", "height > 1024"],
        "high-quality": ["width > 320", "height > 320", "word_count > 10", "clip_similarity_vitb32 > 0.3"],
        "image-generation": ["width > 512", "height > 512", "aesthetic_score_laion_v2 > 5.0", "watermark_score < 0.5"],
    }


BOUNDARIES = [
    ("non-face", "width", 257, 256),
    ("non-face", "height", 257, 256),
    ("non-face", "num_faces", 0, 1),
    ("high-resolution", "width", 1025, 1024),
    ("high-resolution", "height", 1025, 1024),
    ("high-quality", "width", 321, 320),
    ("high-quality", "height", 321, 320),
    ("high-quality", "word_count", 11, 10),
    ("high-quality", "clip_similarity_vitb32", f32_above(0.3), 0.3),
    ("image-generation", "width", 513, 512),
    ("image-generation", "height", 513, 512),
    ("image-generation", "aesthetic_score_laion_v2", f32_above(5.0), 5.0),
    ("image-generation", "watermark_score", f32_below(0.5), 0.5),
]


@pytest.mark.parametrize("preset,column,kept,dropped", BOUNDARIES, ids=[f"{p}-{c}" for p, c, _, _ in BOUNDARIES])
def test_builtin_preset_keeps_one_side_of_its_boundary_and_drops_nulls(preset, column, kept, dropped):
    rows = [annotated_row(1, **{column: kept}), annotated_row(2, **{column: dropped}), annotated_row(3, **{column: None})]
    assert select(BUILTIN[preset], rows) == [1]


def test_a_float32_score_stored_as_the_threshold_is_not_above_it():
    # Spark would widen the float32 column to double (0.30000001 > 0.3); presets compare in float32.
    rows = [annotated_row(1, clip_similarity_vitb32=0.3), annotated_row(2, clip_similarity_vitb32=0.31)]
    assert select(BUILTIN["high-quality"], rows) == [2]


CUSTOM = """
[mid-aesthetic]
description = "a range"
[mid-aesthetic.where]
aesthetic_score_laion_v2 = { ge = 4.5, lt = 6.0 }

[faces-unknown-ok]
[faces-unknown-ok.where]
num_faces = { eq = 0, nulls = "keep" }

[no-faces-count]
[no-faces-count.where]
num_faces = { nulls = "only" }

[has-phash]
[has-phash.where]
image_phash = { nulls = "drop" }

[clip-top-30]
description = "DataComp-style"
[clip-top-30.top]
clip_similarity_vitl14 = 0.3

[low-watermark-half]
[low-watermark-half.bottom]
watermark_score = 0.5
"""


def custom(name: str):
    return parse_presets(CUSTOM, "custom.toml")[name]


def test_a_range_keeps_its_closed_low_end_and_drops_its_open_high_end():
    rows = [annotated_row(i, aesthetic_score_laion_v2=v) for i, v in enumerate([4.49, 4.5, 5.9, 6.0, None])]
    assert select(custom("mid-aesthetic"), rows) == [1, 2]


def test_null_handling_keep_only_and_drop():
    rows = [annotated_row(1, num_faces=0), annotated_row(2, num_faces=2), annotated_row(3, num_faces=None)]
    assert select(custom("faces-unknown-ok"), rows) == [1, 3]
    assert select(custom("no-faces-count"), rows) == [3]
    assert select(custom("has-phash"), [annotated_row(1), annotated_row(2, image_phash=None)]) == [1]


def test_top_fraction_keeps_what_datacomps_numpy_quantile_keeps():
    scores = [0.05, 0.31, 0.12, 0.27, 0.27, 0.08, 0.33, 0.19, 0.22, 0.14, None]
    rows = [annotated_row(i, clip_similarity_vitl14=s) for i, s in enumerate(scores)]
    values = np.array([s for s in scores if s is not None], dtype=np.float32)
    threshold = np.quantile(values, 1 - 0.3)  # DataComp's apply_filter
    expected = [i for i, s in enumerate(scores) if s is not None and np.float32(s) >= threshold]
    assert select(custom("clip-top-30"), rows) == expected == [1, 3, 4, 6]  # the 0.27 tie is kept whole


def test_bottom_fraction_keeps_the_lowest_values():
    rows = [annotated_row(i, watermark_score=v) for i, v in enumerate([0.9, 0.1, 0.5, 0.3, 0.7])]
    assert select(custom("low-watermark-half"), rows) == [1, 2, 3]


def test_a_fraction_over_an_input_without_values_keeps_nothing():
    rows = [annotated_row(i, clip_similarity_vitl14=None) for i in range(3)]
    assert select(custom("clip-top-30"), rows) == []


def exact_quantile(values: np.ndarray, q: Fraction) -> Fraction:
    """numpy's linear quantile in exact arithmetic (numpy's own float product can land a hair past an
    integer position: (1 - 0.99) * 1000 = 10.000000000000009)."""
    position = q * (len(values) - 1)
    low, high = math.floor(position), math.ceil(position)
    return Fraction(values[low]) + (position - low) * (Fraction(values[high]) - Fraction(values[low]))


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.3, 0.31, 0.5, 0.7, 0.99, 1.0])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 11, 100, 1001])
def test_threshold_index_matches_the_linear_quantile(fraction, n):
    rng = np.random.default_rng(n)
    values = np.sort(rng.integers(0, max(2, n // 3), n).astype(np.float64))  # many ties
    f = Fraction(str(fraction))
    top = KeepFraction("c", fraction, largest=True)
    assert (values >= values[top.threshold_index(n)]).sum() == sum(Fraction(v) >= exact_quantile(values, 1 - f) for v in values)
    bottom = KeepFraction("c", fraction, largest=False)
    assert (values <= values[bottom.threshold_index(n)]).sum() == sum(Fraction(v) <= exact_quantile(values, f) for v in values)
    q = top.quantile_for(n)
    assert math.ceil(q * n) - 1 == top.threshold_index(n)  # percentile_disc's index in DuckDB and Spark


def test_sql_is_rendered_per_dialect_with_bound_parameters():
    preset = BUILTIN["high-quality"]
    types = check_columns(preset, ANNOTATED.arrow_schema(), "annotated")
    duck, spark = render(preset, types, DUCKDB), render(preset, types, SPARK)
    assert duck.clauses[0] == '"width" > CAST($p0 AS INT)'
    assert spark.clauses[3] == "`clip_similarity_vitb32` > CAST(:p3 AS FLOAT)"
    assert duck.params == spark.params == {"p0": 320, "p1": 320, "p2": 10, "p3": 0.3}


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(PresetError, match="unknown preset 'hq'.*high-quality.*image-generation"):
        get_preset(BUILTIN, "hq")


def test_a_preset_on_a_table_missing_a_column_lists_the_columns_it_has():
    schema = ANNOTATED.arrow_schema().remove(ANNOTATED.names.index("word_count"))
    with pytest.raises(PresetError, match=r"\['word_count'\] that my table lacks; available: id, url, text"):
        check_columns(BUILTIN["high-quality"], schema, "my table")


def test_an_unknown_column_in_a_custom_preset_is_named():
    preset = parse_presets("[x.where]\nclip_score = { gt = 0.2 }\n", "x.toml")["x"]
    with pytest.raises(PresetError, match="clip_score.*available:.*clip_similarity_vitb32"):
        check_columns(preset, ANNOTATED.arrow_schema(), "input")


@pytest.mark.parametrize(
    "text,message",
    [
        ("[x.where]\nwidth = { gte = 3 }\n", r"unknown operator\(s\) \['gte'\].*known: \['gt', 'ge'"),
        ("[x]\nwher = 1\n", r"unknown key\(s\) \['wher'\]; known"),
        ("[x.where]\nwidth = 320\n", "must be a table like"),
        ("[x.where]\nwidth = { gt = 3, nulls = 'maybe' }\n", "use one of \\['drop', 'keep', 'only'\\]"),
        ("[x.where]\nwidth = { gt = 3, nulls = 'only' }\n", "keeps only nulls"),
        ("[x.top]\nclip_similarity_vitl14 = 30\n", r"must be in \(0, 1\]"),
        ("[x]\ndescription = 'nothing'\n", "selects nothing"),
        ("[x.where\n", "not valid TOML"),
    ],
)
def test_bad_preset_definitions_are_clear_errors(text, message):
    with pytest.raises(PresetError, match=message):
        parse_presets(text, "bad.toml")


@pytest.mark.parametrize(
    "where,message",
    [
        ("width = { gt = 320.5 }", "'width' is an integer column; 320.5 is not an integer"),
        ("watermark_score = { lt = 'low' }", "'watermark_score' is a number column"),
        ("text = { eq = 3 }", "'text' is a string column"),
    ],
)
def test_a_threshold_of_the_wrong_type_is_a_clear_error(where, message):
    preset = parse_presets(f"[x.where]\n{where}\n", "x.toml")["x"]
    with pytest.raises(PresetError, match=message):
        render(preset, check_columns(preset, ANNOTATED.arrow_schema(), "input"), DUCKDB)


def test_a_binary_column_cannot_be_compared():
    preset = parse_presets("[x.where]\nimage_bytes = { nulls = 'drop' }\n", "x.toml")["x"]
    with pytest.raises(PresetError, match="'image_bytes' has type binary"):
        check_columns(preset, ANNOTATED.arrow_schema(), "input")


def test_a_preset_file_adds_presets_and_may_redefine_a_builtin(tmp_path, caplog):
    path = tmp_path / "mine.toml"
    path.write_text(CUSTOM + "\n[high-resolution.where]\nwidth = { gt = 2048 }\n")
    with caplog.at_level(logging.WARNING):
        presets = load_presets(str(path))
    assert {"non-face", "mid-aesthetic", "clip-top-30"} <= set(presets)
    assert presets["high-resolution"].describe() == ["width > 2048"]
    assert "redefines the built-in preset 'high-resolution'" in caplog.text


def test_a_missing_preset_file_is_named(tmp_path):
    with pytest.raises(PresetError, match="preset file not found: .*nope.toml"):
        load_presets(str(tmp_path / "nope.toml"))


def test_an_integer_threshold_on_a_float_column_and_a_whole_float_on_an_int_column_work():
    preset = parse_presets("[x.where]\naesthetic_score_laion_v2 = { gt = 5 }\nwidth = { ge = 300.0 }\n", "x.toml")["x"]
    rows = [annotated_row(1, aesthetic_score_laion_v2=5.5, width=300), annotated_row(2, aesthetic_score_laion_v2=5.0)]
    assert select(preset, rows) == [1]
    assert isinstance(render(preset, check_columns(preset, pa.schema(ANNOTATED.arrow_schema()), "t"), DUCKDB).params["p1"], int)
