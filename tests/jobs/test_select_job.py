"""`curation select` / `presets`: DuckDB and Spark give the same uid lists; outputs, shards and errors."""

from __future__ import annotations

import io
import json
import tarfile

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.stages.config import load_config
from jobs.stages.select import read_uids
from curation.output.shards import even_shards
from jobs import select as job
from jobs.cli import app
from schemas import ANNOTATED
from tests.conftest import annotated_row, photo_files

runner = CliRunner()

EDGES = {
    "width": [200, 256, 257, 320, 321, 512, 513, 1024, 1025, 3000, None],
    "height": [256, 257, 320, 321, 512, 513, 1024, 1025, None],
    "word_count": [3, 10, 11, 40, None],
    "num_faces": [0, 0, 1, 3, None],
    "clip_similarity_vitb32": [0.2, 0.3, 0.30000002, 0.35, None],
    "clip_similarity_vitl14": [0.1, 0.2, 0.25, 0.25, 0.3, 0.31, None],
    "aesthetic_score_laion_v2": [4.0, 5.0, 5.0000005, 6.5, None],
    "watermark_score": [0.1, 0.4999999, 0.5, 0.9, None],
}

CUSTOM = """
[clip-top-30]
[clip-top-30.top]
clip_similarity_vitl14 = 0.3

[big-unknown-faces]
[big-unknown-faces.where]
width = { ge = 512, le = 1025 }
num_faces = { lt = 1, nulls = "keep" }
[big-unknown-faces.bottom]
watermark_score = 0.4

[needs-missing-column]
[needs-missing-column.where]
clip_score = { gt = 0.2 }
"""


def boundary_rows(n: int, seed: int) -> list[dict]:
    """Rows whose scores sit on and beside every preset threshold, with nulls."""
    rng = np.random.default_rng(seed)
    return [annotated_row(i, **{c: values[rng.integers(len(values))] for c, values in EDGES.items()}) for i in range(n)]


@pytest.fixture
def annotated_dir(tmp_path):
    """Three parquet shards of annotated rows, as the annotate stage leaves them (data/ of a stage folder)."""
    rows = boundary_rows(300, seed=7)
    data = tmp_path / "annotated" / "data"
    data.mkdir(parents=True)
    for k in range(3):
        pq.write_table(ANNOTATED.from_pylist(rows[k::3]), data / f"part-{k:05d}.parquet")
    return tmp_path / "annotated", rows


@pytest.fixture
def preset_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(CUSTOM)
    return str(path)


def run(spark, engine: str, src, out, preset: str, preset_file: str | None = None, **kw) -> dict:
    cfg = load_config(None, {"select": {"engine": engine, "preset_file": preset_file}})
    return job.run(spark if engine == "spark" else None, cfg, str(src), preset, str(out), **kw)


@pytest.mark.spark
@pytest.mark.parametrize(
    "preset", ["non-face", "high-resolution", "high-quality", "image-generation", "clip-top-30", "big-unknown-faces"]
)
def test_duckdb_and_spark_select_identical_sorted_uid_lists(spark, annotated_dir, preset_file, tmp_path, preset):
    src, rows = annotated_dir
    duck = run(spark, "duckdb", src, tmp_path / "duck", preset, preset_file)
    spk = run(spark, "spark", src, tmp_path / "spark", preset, preset_file)
    duck_uids, spark_uids = read_uids(str(tmp_path / "duck")), read_uids(str(tmp_path / "spark"))
    assert duck_uids == spark_uids == sorted(duck_uids)
    assert 0 < len(duck_uids) < len(rows)
    for key in ("rows_in", "rows_out", "passing", "thresholds"):
        assert duck[key] == spk[key], key
    assert duck["rows_out"] == len(duck_uids) and duck["rows_in"] == 300


def test_select_writes_uids_stats_and_success_and_a_rerun_reuses_them(annotated_dir, tmp_path):
    src, rows = annotated_dir
    out = tmp_path / "hq"
    stats = run(None, "duckdb", src, out, "high-quality")
    expected = sorted(
        r["uid"] for r in rows
        if None not in (r["width"], r["height"], r["word_count"], r["clip_similarity_vitb32"])
        and r["width"] > 320 and r["height"] > 320 and r["word_count"] > 10
        and np.float32(r["clip_similarity_vitb32"]) > np.float32(0.3)
    )
    assert read_uids(str(out)) == expected
    assert json.loads((out / "_stats.json").read_text()) == stats
    assert (out / "_SUCCESS").exists() and stats["rows_out"] == len(expected) and stats["rows_in"] == len(rows)
    assert stats["passing"]["width > 320"] == sum(1 for r in rows if r["width"] is not None and r["width"] > 320)
    before = (out / "uids" / "part-00000.parquet").stat().st_mtime_ns
    assert run(None, "duckdb", src, out, "high-quality") == stats
    assert (out / "uids" / "part-00000.parquet").stat().st_mtime_ns == before


def test_another_preset_into_a_finished_output_needs_overwrite(annotated_dir, tmp_path):
    src, _ = annotated_dir
    run(None, "duckdb", src, tmp_path / "o", "high-quality")
    with pytest.raises(ValueError, match="different selection.*--overwrite"):
        run(None, "duckdb", src, tmp_path / "o", "non-face")
    assert run(None, "duckdb", src, tmp_path / "o", "non-face", overwrite=True)["preset"] == "non-face"


def test_an_output_folder_holding_other_files_is_never_wiped(annotated_dir, tmp_path):
    src, _ = annotated_dir
    precious = tmp_path / "home" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    with pytest.raises(ValueError, match="not a selection's \\(notes.txt\\)"):
        run(None, "duckdb", src, precious.parent, "high-quality", overwrite=True)
    assert precious.read_text() == "keep me"


@pytest.fixture
def annotated_with_images(tmp_path):
    rows = [
        annotated_row(i, image_bytes=data, width=800 if i != 3 else 200, text=f"photo {name}")
        for i, (name, data) in enumerate(photo_files(6))
    ]
    path = tmp_path / "with-images"
    path.mkdir()
    pq.write_table(ANNOTATED.from_pylist(rows), path / "shard.parquet")
    return path, rows


def test_materialized_shards_are_even_sorted_and_readable_by_pandas_and_duckdb(annotated_with_images, tmp_path):
    src, rows = annotated_with_images
    out = tmp_path / "subset"
    cfg = load_config(None, {"select": {"rows_per_shard": 2, "webdataset": True}})
    stats = job.run(None, cfg, str(src), "non-face", str(out), materialize=True)
    kept = sorted((r for r in rows if r["width"] > 256), key=lambda r: r["uid"])
    assert stats["materialized"] == {"shards": 3, "rows": 5, "rows_per_shard": 2, "webdataset": True}
    shards = sorted((out / "data").glob("part-*.parquet"))
    assert [pq.read_metadata(s).num_rows for s in shards] == [2, 2, 1]
    frame = pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True)
    assert frame["uid"].tolist() == [r["uid"] for r in kept] == read_uids(str(out))
    assert frame["image_bytes"].tolist() == [r["image_bytes"] for r in kept]
    assert pq.read_schema(shards[0]) == ANNOTATED.arrow_schema()
    con = duckdb.connect()
    total, first = con.sql(f"SELECT count(*), min(uid) FROM read_parquet('{out}/data/*.parquet')").fetchall()[0]
    assert (total, first) == (5, kept[0]["uid"])
    with tarfile.open(out / "wds" / "part-00000.tar") as tar:
        names = tar.getnames()
        assert names[:3] == [f"{kept[0]['uid']}.jpg", f"{kept[0]['uid']}.txt", f"{kept[0]['uid']}.json"]
        assert tar.extractfile(names[0]).read() == kept[0]["image_bytes"]
        meta = json.load(io.TextIOWrapper(tar.extractfile(names[2])))
        assert meta["uid"] == kept[0]["uid"] and "image_bytes" not in meta


@pytest.mark.parametrize("sizes,per_shard,expected", [([5, 0, 3, 7], 4, [4, 4, 4, 3]), ([2, 2], 4, [4]), ([], 3, []), ([3], 1, [1, 1, 1])])
def test_even_shards_regroup_batches_without_losing_order(sizes, per_shard, expected):
    start, batches = 0, []
    for n in sizes:
        batches.append(pa.record_batch({"i": list(range(start, start + n))}))
        start += n
    shards = list(even_shards(batches, per_shard))
    assert [t.num_rows for t in shards] == expected
    assert [i for t in shards for i in t.column("i").to_pylist()] == list(range(start))


def test_materializing_twice_gives_identical_bytes(annotated_with_images, tmp_path):
    src, _ = annotated_with_images
    cfg = load_config(None, {"select": {"rows_per_shard": 4, "webdataset": True}})
    for name in ("a", "b"):
        job.run(None, cfg, str(src), "non-face", str(tmp_path / name), materialize=True)
    for rel in ("data/part-00000.parquet", "data/part-00001.parquet", "wds/part-00001.tar", "uids/part-00000.parquet"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_select_reads_and_writes_s3(annotated_dir, s3_bucket, s3_server, tmp_path):
    src, rows = annotated_dir
    bucket, client = s3_bucket
    for f in sorted((src / "data").glob("*.parquet")):
        client.upload_file(str(f), bucket, f"annotated/data/{f.name}")
    run(None, "duckdb", src, tmp_path / "local", "image-generation")
    cfg = load_config(None, {"storage": {"s3_endpoint_url": s3_server.s3_endpoint_url}})
    stats = job.run(None, cfg, f"s3://{bucket}/annotated", "image-generation", f"s3://{bucket}/subset", materialize=True)
    assert stats["input_files"] == 3
    assert read_uids(f"s3://{bucket}/subset", cfg.storage.resolved()) == read_uids(str(tmp_path / "local"))
    listed = client.list_objects_v2(Bucket=bucket, Prefix="subset/")["Contents"]
    assert {"subset/_SUCCESS", "subset/_stats.json", "subset/uids/part-00000.parquet"} <= {o["Key"] for o in listed}


@pytest.mark.spark
def test_spark_reads_s3_input_through_pyarrow(spark, annotated_dir, preset_file, s3_bucket, s3_server, tmp_path):
    src, _ = annotated_dir
    bucket, client = s3_bucket
    for f in sorted((src / "data").glob("*.parquet")):
        client.upload_file(str(f), bucket, f"annotated/data/{f.name}")
    run(None, "duckdb", src, tmp_path / "local", "clip-top-30", preset_file)
    cfg = load_config(None, {"storage": {"s3_endpoint_url": s3_server.s3_endpoint_url}, "select": {"engine": "spark", "preset_file": preset_file}})
    job.run(spark, cfg, f"s3://{bucket}/annotated", "clip-top-30", f"s3://{bucket}/subset")
    assert read_uids(f"s3://{bucket}/subset", cfg.storage.resolved()) == read_uids(str(tmp_path / "local"))


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["select"], ["presets"], ["presets", "list"], ["presets", "show"], ["report"]])
def test_new_commands_have_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_cli_select_prints_counts(annotated_dir, tmp_path):
    src, _ = annotated_dir
    result = runner.invoke(app, ["select", "-i", str(src), "-p", "high-resolution", "-o", str(tmp_path / "hr")])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "hr" / "_stats.json").read_text())
    assert f"preset high-resolution: {stats['rows_out']:,} of 300 rows" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["-p", "hq"], "unknown preset 'hq'; available: high-quality, high-resolution, image-generation, non-face"),
        (["-p", "needs-missing-column"], "uses column(s) ['clip_score']"),
        (["-p", "high-quality", "--engine", "polars"], "[select] engine 'polars'"),
    ],
)
def test_cli_select_errors_are_clear(annotated_dir, preset_file, tmp_path, args, message):
    src, _ = annotated_dir
    extra = ["--preset-file", preset_file] if "needs-missing-column" in args else []
    result = runner.invoke(app, ["select", "-i", str(src), "-o", str(tmp_path / "x"), *args, *extra])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_cli_select_on_a_table_missing_a_column_lists_the_columns(tmp_path):
    table = ANNOTATED.from_pylist([annotated_row(1)]).drop_columns(["word_count"])
    pq.write_table(table, tmp_path / "t.parquet")
    result = runner.invoke(app, ["select", "-i", str(tmp_path / "t.parquet"), "-p", "high-quality", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "['word_count']" in flat and "available: id, url, text, width" in flat


def test_presets_list_counts_each_preset_on_an_input(annotated_dir, preset_file):
    src, _ = annotated_dir
    result = runner.invoke(app, ["presets", "list", "--input", str(src), "--preset-file", preset_file], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    hq = json.loads(runner.invoke(app, ["presets", "show", "high-quality", "--input", str(src)]).output)
    assert f"{hq['rows_out']:,} of 300" in result.output
    assert "n/a: preset 'needs-missing-column'" in result.output
    for name in ("non-face", "high-resolution", "image-generation", "clip-top-30"):
        assert name in result.output


def test_presets_show_gives_definition_sql_and_counts(annotated_dir):
    src, _ = annotated_dir
    plain = json.loads(runner.invoke(app, ["presets", "show", "image-generation"]).output)
    assert plain["definition"] == ["width > 512", "height > 512", "aesthetic_score_laion_v2 > 5.0", "watermark_score < 0.5"]
    counted = json.loads(runner.invoke(app, ["presets", "show", "image-generation", "-i", str(src)]).output)
    assert counted["rows_in"] == 300 and set(counted["passing"]) == set(plain["definition"])
    assert '"width" > CAST($p0 AS INT)' in counted["where"]
