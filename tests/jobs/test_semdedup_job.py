"""The annotate stage's embeddings output and the semdedup Spark job in local[2], with the tiny
random-weight models: the mechanics (identical images go, distinct ones stay, the all-pairs reference,
reruns, row order, a faiss index over the embeddings), not semantic quality."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.stages.config import AnnotateOptions, Config, SemdedupOptions
from curation.errors import InputError
from jobs.stages.semdedup import brute_force, load_centroids
from curation.stage import StageDir
from jobs import annotate, pipeline
from jobs import semdedup as job
from jobs.stages import select as select_job
from jobs.cli import app
from tests.conftest import SHARED_DATA
from tests.models.fixtures import photo_bytes, tiny_models_toml, write_unique  # noqa: F401

pytestmark = pytest.mark.spark
EPS = 1e-3  # random weights: only (near) identical embeddings are duplicates


def _config(models: str, embeddings: str = "vitb32", **semdedup) -> Config:
    return Config(
        annotate=AnnotateOptions(models=models, device="cpu", batch_size=4, rows_per_shard=3, embeddings=embeddings),
        semdedup=SemdedupOptions(**{"eps": EPS, "clusters": 2, "train_sample": 1000, **semdedup}),
    )


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, tiny_models_toml):
    """7 rows: 5 distinct photos, then the first two again (byte-identical images, other captions)."""
    photos = photo_bytes(5)
    unique = write_unique(tmp_path_factory.mktemp("unique"), photos + photos[:2], files=2, row_group_size=2)
    out = tmp_path_factory.mktemp("run") / "annotate"
    stats = annotate.run(pytest.spark_session, [str(unique)], str(out), _config(tiny_models_toml))
    assert stats["rows_out"] == 7 and stats["embeddings"] == "clip_vitb32"
    return out


@pytest.fixture(scope="module", autouse=True)
def _session(spark):
    pytest.spark_session = spark


def _shards(folder):
    return sorted(p.stem for p in (folder / "data").glob("part-*.parquet"))


def _all_embeddings(folder):
    """(uids, clip_similarity_vitb32, image embeddings) of every shard, in shard and row order."""
    uids, scores, emb = [], [], []
    for shard in _shards(folder):
        n = shard.replace("part-", "").replace("-", "")
        data = pq.read_table(folder / "data" / f"{shard}.parquet")
        uids += data.column("uid").to_pylist()
        scores += data.column("clip_similarity_vitb32").to_pylist()
        emb.append(np.load(folder / "img_emb" / f"img_emb_{n}.npy"))
    return uids, np.array(scores), np.concatenate(emb)


def test_embeddings_follow_the_rows_of_each_shard(annotated):
    shards = _shards(annotated)
    assert len(shards) == 3
    for shard in shards:
        n = shard.replace("part-", "").replace("-", "")
        data = pq.read_table(annotated / "data" / f"{shard}.parquet")
        meta = pq.read_table(annotated / "metadata" / f"metadata_{n}.parquet")
        img, text = np.load(annotated / "img_emb" / f"img_emb_{n}.npy"), np.load(annotated / "text_emb" / f"text_emb_{n}.npy")
        assert meta.column_names == ["uid", "url", "caption"]
        assert meta.column("uid").equals(data.column("uid")) and meta.column("caption").equals(data.column("text"))
        assert img.dtype == text.dtype == np.float16 and img.shape == text.shape and len(img) == data.num_rows
        # the stored score is the cosine of the two stored embeddings, row by row
        cos = (img.astype(np.float32) * text.astype(np.float32)).sum(axis=1)
        np.testing.assert_allclose(cos, data.column("clip_similarity_vitb32").to_numpy(), atol=5e-3)
        np.testing.assert_allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_no_embeddings_when_none_asked(spark, tmp_path, tiny_models_toml):
    unique = write_unique(tmp_path / "unique", photo_bytes(2))
    annotate.run(spark, [str(unique)], str(tmp_path / "a"), _config(tiny_models_toml, embeddings="none"))
    assert not (tmp_path / "a" / "img_emb").exists()
    with pytest.raises(InputError, match="embeddings"):
        job.run(spark, [str(tmp_path / "a")], str(tmp_path / "s"), _config(tiny_models_toml))


def test_identical_images_with_other_captions_go_and_distinct_ones_stay(spark, tmp_path, annotated, tiny_models_toml):
    out = tmp_path / "semdedup"
    stats = job.run(spark, [str(annotated)], str(out), _config(tiny_models_toml))
    assert (stats["rows_in"], stats["rows_out"], stats["rejected"]) == (7, 5, {"semantic_duplicate": 2})
    stage = StageDir(str(out), "semdedup")
    kept = stage.read()
    assert kept.schema == pq.read_schema(annotated / "data" / "part-00000-0000.parquet")
    assert sorted(kept.column("url").to_pylist()) == sorted(f"https://img.example.com/row/{i}.jpg" for i in range(7)
                                                            if i not in _rejected_rows(stage, annotated))
    # the decisions are those of the all-pairs reference (no clusters, no blocks)
    uids, scores, emb = _all_embeddings(annotated)
    assert _decisions(stage) == brute_force(uids, scores, emb, EPS)
    # the histogram counts every row that has a neighbour in its cluster: 7 unless k-means leaves a row alone
    # (the generated photos without ../shared/data may), checked against the saved centroids by numpy
    centroids = load_centroids(stage)
    unit = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    nearest = np.argmax(unit @ centroids.astype(np.float64).T, axis=1)
    with_neighbour = int((np.bincount(nearest)[nearest] >= 2).sum())
    assert stats["nn_similarity_histogram"]["rows"] == with_neighbour and stats["clusters"] == 2 == len(centroids)
    if (SHARED_DATA / "images" / "photos").is_dir():
        assert with_neighbour == 7


def _rejected_rows(stage, annotated):
    uids, _, _ = _all_embeddings(annotated)
    data = {u: i for i, u in enumerate(uids)}
    rejected = set(_decisions(stage))
    urls = pq.read_table(annotated / "metadata").to_pylist()
    return {int(re.search(r"/(\d+)\.jpg", r["url"]).group(1)) for r in urls if r["uid"] in rejected and r["uid"] in data}


def _decisions(stage) -> dict[str, str]:
    rejected = stage.read("rejected").to_pylist()
    assert {r["reason"] for r in rejected} <= {"semantic_duplicate"}
    return {r["uid"]: re.match(r"kept (\w+) \(cosine ([0-9.]+)\)", r["detail"]).group(1) for r in rejected}


def test_each_rejected_row_is_an_identical_image_of_a_kept_row(spark, tmp_path, annotated, tiny_models_toml):
    out = tmp_path / "semdedup"
    job.run(spark, [str(annotated)], str(out), _config(tiny_models_toml))
    meta = {r["uid"]: r["url"] for r in pq.read_table(annotated / "metadata").to_pylist()}
    photo = lambda uid: int(re.search(r"/(\d+)\.jpg", meta[uid]).group(1)) % 5  # noqa: E731
    decisions = _decisions(StageDir(str(out), "semdedup"))
    assert sorted(photo(u) for u in decisions) == [0, 1]
    assert all(photo(u) == photo(k) and u != k for u, k in decisions.items())


def test_rerun_is_a_no_op_and_a_fresh_run_gives_the_same_result(spark, tmp_path, annotated, tiny_models_toml):
    out = tmp_path / "semdedup"
    cfg = _config(tiny_models_toml, partitions=3, block_rows=2)
    first = job.run(spark, [str(annotated)], str(out), cfg)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert job.run(spark, [str(annotated)], str(out), cfg)["rows_out"] == first["rows_out"]
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    before = _decisions(StageDir(str(out), "semdedup"))
    (out / "_SUCCESS").unlink()  # a lost shard is redone with the saved centroids, the rest skipped
    (out / "_shards" / "part-00001.json").unlink()
    (out / "data" / "part-00001.parquet").unlink()
    job.run(spark, [str(annotated)], str(out), cfg)
    assert _decisions(StageDir(str(out), "semdedup")) == before
    job.run(spark, [str(annotated)], str(out), _config(tiny_models_toml, partitions=1), overwrite=True)
    assert _decisions(StageDir(str(out), "semdedup")) == before


def test_a_faiss_index_over_the_embeddings_answers_a_query(annotated):
    import faiss

    emb = np.concatenate([np.load(p) for p in sorted((annotated / "img_emb").glob("img_emb_*.npy"))]).astype(np.float32)
    meta = pq.read_table(annotated / "metadata")  # one file per shard, the same sorted order
    assert meta.num_rows == len(emb)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    sims, ids = index.search(emb[2:3], 2)
    assert ids[0][0] == 2 or sims[0][0] == pytest.approx(sims[0][1], abs=1e-3)  # itself (or an identical image)
    assert sims[0][0] == pytest.approx(1.0, abs=2e-3)
    assert meta.column("uid")[int(ids[0][0])].as_py() in set(meta.column("uid").to_pylist())


def test_pipeline_runs_semdedup_only_when_asked():
    assert "semdedup" in pipeline.STAGES and "semdedup" not in pipeline.DEFAULT_STAGES
    assert list(pipeline.DEFAULT_STAGES) == ["extract", "filter-text", "download", "dedup", "annotate"]
    assert job.SPEC.upstream == "annotate"
    assert select_job.SPEC.upstream == ("annotate", "semdedup")


def test_cli_semdedup(tmp_path, annotated):
    config = tmp_path / "c.toml"
    config.write_text('[semdedup]\nclusters = 2\ntrain_sample = 100\n[spark]\nmaster = "local[2]"\n')
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["semdedup", "--input", str(annotated), "--output", str(out), "--eps", str(EPS),
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["rejected"] == {"semantic_duplicate": 2} and stats["config"]["semdedup"]["eps"] == EPS


def test_select_reads_a_semdedup_folder_as_it_reads_an_annotate_folder(tmp_path, annotated):
    config = tmp_path / "c.toml"
    config.write_text('[semdedup]\nclusters = 2\ntrain_sample = 100\n[spark]\nmaster = "local[2]"\n')
    deduped = tmp_path / "semdedup"
    runner = CliRunner()
    result = runner.invoke(app, ["semdedup", "--input", str(annotated), "--output", str(deduped), "--eps", str(EPS),
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "selected"
    result = runner.invoke(app, ["select", "--input", str(deduped), "--output", str(out), "--preset", "high-resolution",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "_stats.json").read_text())
    kept = json.loads((deduped / "_stats.json").read_text())["rows_out"]
    assert stats["rows_in"] == kept  # the semdedup folder's kept rows, not the annotate folder's
