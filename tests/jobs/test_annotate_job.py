"""The annotate Spark job in local[2]: COYO's columns, every row accounted, resumable, ids unique."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from jobs.stages.annotate import SPEC, plan_chunks, annotate_task
from curation.lifecycle import input_files
from jobs.stages.config import AnnotateOptions, Config
from curation.stage import StageDir
from jobs import annotate as job
from models.base import MissingWeightsError
from models.runner import RunOptions
from schemas import ANNOTATED
from tests.models.fixtures import photo_bytes, tiny_models, tiny_models_toml, write_unique  # noqa: F401

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def unique_dir(tmp_path_factory):
    images = photo_bytes(7) + [b"GIF89a-broken"]
    return write_unique(tmp_path_factory.mktemp("unique"), images, files=2, row_group_size=2)


def _config(models: str, **kw) -> Config:
    return Config(annotate=AnnotateOptions(models=models, device="cpu", batch_size=4, rows_per_shard=3, **kw))


def _by_uid(table: pa.Table) -> pa.Table:
    return table.sort_by("uid")


def test_job_writes_the_annotated_table_and_accounts_for_every_row(spark, tmp_path, unique_dir, tiny_models_toml, tiny_models):
    out = tmp_path / "annotated"
    stats = job.run(spark, [str(unique_dir)], str(out), _config(tiny_models_toml))
    assert (stats["rows_in"], stats["rows_out"], stats["rejected"]) == (8, 7, {"not_decodable": 1})
    assert stats["columns"]["nsfw_score_opennsfw2"] == "null: [nsfw_opennsfw2] not configured"
    assert stats["null_counts"]["nsfw_score_gantman"] == 7 and stats["null_counts"]["clip_similarity_vitl14"] == 0
    stage = StageDir(str(out), "annotate")
    table = _by_uid(stage.read(table=ANNOTATED))
    assert table.schema == ANNOTATED.arrow_schema()
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == 7 and min(ids) >= 0

    # the same shards written by the pure task functions, without Spark
    pure = StageDir(str(tmp_path / "pure"), "annotate")
    pure.prepare()
    for chunk in plan_chunks(input_files(SPEC, [str(unique_dir)]), 3):
        annotate_task(pure, chunk, tiny_models, RunOptions(device="cpu", batch_size=4))
    expected = _by_uid(pure.read(table=ANNOTATED))
    for col in ANNOTATED.names:
        a, b = table.column(col).to_pylist(), expected.column(col).to_pylist()
        if ANNOTATED.column(col).kind == "float32":
            np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-4, atol=1e-5, err_msg=col)
        else:
            assert a == b, col
    assert stage.read("rejected").column("reason").to_pylist() == ["not_decodable"]


def test_rerun_skips_and_a_lost_shard_is_redone_identically(spark, tmp_path, unique_dir, tiny_models_toml):
    out = tmp_path / "annotated"
    cfg = _config(tiny_models_toml)
    job.run(spark, [str(unique_dir)], str(out), cfg)
    before = _by_uid(StageDir(str(out), "annotate").read(table=ANNOTATED))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    job.run(spark, [str(unique_dir)], str(out), cfg)
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    (out / "_SUCCESS").unlink()
    (out / "_shards" / "part-00001-0000.json").unlink()
    (out / "data" / "part-00001-0000.parquet").unlink()
    stats = job.run(spark, [str(unique_dir)], str(out), cfg)
    assert stats["rows_in"] == 8
    after = _by_uid(StageDir(str(out), "annotate").read(table=ANNOTATED))
    assert after.column("id").equals(before.column("id"))
    np.testing.assert_allclose(after.column("clip_similarity_vitb32").to_numpy(), before.column("clip_similarity_vitb32").to_numpy(), atol=1e-5)


def test_id_collisions_are_resolved_the_same_way_whatever_the_sharding(spark, tmp_path, unique_dir, tiny_models_toml):
    results = []
    for rows in (2, 5):
        cfg = Config(annotate=AnnotateOptions(models=tiny_models_toml, device="cpu", rows_per_shard=rows, id_bits=3))
        stats = job.run(spark, [str(unique_dir)], str(tmp_path / f"out-{rows}"), cfg)
        table = StageDir(str(tmp_path / f"out-{rows}"), "annotate").read(table=ANNOTATED)
        ids = table.column("id").to_pylist()
        assert len(set(ids)) == len(ids) == 7 and max(ids) < 8  # 7 rows in 8 possible ids: collisions certain
        assert stats["id_collisions_resolved"] > 0
        results.append(dict(zip(table.column("uid").to_pylist(), ids)))
    assert results[0] == results[1]


def test_missing_weights_stop_the_stage_before_any_task(spark, tmp_path, unique_dir):
    models = tmp_path / "MODELS.toml"
    models.write_text('[watermark]\nweights = "watermark_model_v1.pt"\n')
    with pytest.raises(MissingWeightsError, match="model 'watermark': weight file not found: .*watermark_model_v1.pt"):
        job.run(spark, [str(unique_dir)], str(tmp_path / "out"), _config(str(models)))
    assert not (tmp_path / "out").exists()


def test_cli_annotate_with_random_models_and_models_check(spark, tmp_path, unique_dir):
    from jobs.cli import app

    runner = CliRunner()
    models_dir = tmp_path / "models"
    result = runner.invoke(app, ["models", "init-random", "--output", str(models_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["models", "check", str(models_dir / "MODELS.toml")])
    assert result.exit_code == 0 and "null: [nsfw_opennsfw2] not configured" in " ".join(result.output.split())
    out = tmp_path / "annotated"
    args = ["annotate", "--input", str(unique_dir), "--output", str(out), "--models", str(models_dir / "MODELS.toml"),
            "--device", "cpu", "--batch-size", "4", "--master", "local[2]"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["rows_out"] == 7 and stats["config"]["annotate"]["batch_size"] == 4
    result = runner.invoke(app, ["annotate", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "input not found" in result.output
