"""SemDeDup's units without Spark: blocked per-cluster decisions equal the all-pairs reference, the keep
choice depends on the score and uid only, k-means + assignment, the embeddings' byte round trip."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.stages.semdedup import (
    assign,
    binary_matrix,
    brute_force,
    decide_cluster,
    decide_partition,
    embedding_bytes,
    keep_order,
    normalised,
    sample_rows,
    train_centroids,
)


def planted(groups: int, size: int, dim: int = 32, noise: float = 0.01, singles: int = 20, seed: int = 0):
    """``groups`` tight groups of ``size`` near-copies plus ``singles`` unrelated rows."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(groups, dim))
    emb = np.concatenate([np.repeat(base, size, axis=0) + noise * rng.normal(size=(groups * size, dim)),
                          rng.normal(size=(singles, dim))])
    n = len(emb)
    uids = [f"u{i:04d}" for i in rng.permutation(n)]
    scores = rng.random(n)
    return uids, scores, normalised(emb)


def _rejected(uids, decided) -> dict[str, str]:
    return {uids[i]: uids[k] for i, k in enumerate(decided["kept_by"]) if k >= 0}


@pytest.mark.parametrize("block_rows", [1, 7, 4096])
def test_blocked_decisions_equal_the_all_pairs_reference(block_rows):
    uids, scores, emb = planted(groups=6, size=5)
    decided = decide_cluster(uids, scores, emb, eps=0.05, block_rows=block_rows)
    assert _rejected(uids, decided) == brute_force(uids, scores, emb, eps=0.05)
    assert len(_rejected(uids, decided)) == 6 * 4  # one kept per planted group, every single kept


def test_the_kept_row_has_the_highest_score_then_the_smallest_uid():
    emb = normalised(np.ones((3, 8)))
    decided = decide_cluster(["c", "a", "b"], np.array([0.5, 0.9, 0.9]), emb, eps=0.01)
    assert _rejected(["c", "a", "b"], decided) == {"c": "a", "b": "a"}
    assert decided["similarity"][0] == pytest.approx(1.0, abs=1e-5)
    assert list(keep_order(["c", "a", "b"], np.array([0.5, 0.9, 0.9]))) == [1, 2, 0]


def test_a_row_near_only_a_rejected_row_is_kept():
    # a ~ b and b ~ c above the threshold, a and c below it: a kept, b rejected (by a), c kept
    a, c = np.array([1.0, 0.0]), np.array([np.cos(0.3), np.sin(0.3)])
    b = normalised((a + c)[None])[0]
    decided = decide_cluster(["a", "b", "c"], np.array([3.0, 2.0, 1.0]), np.stack([a, b, c]), eps=0.02)
    assert _rejected(["a", "b", "c"], decided) == {"b": "a"}


def test_decisions_do_not_depend_on_row_order():
    uids, scores, emb = planted(groups=4, size=3, seed=1)
    perm = np.random.default_rng(5).permutation(len(uids))
    first = _rejected(uids, decide_cluster(uids, scores, emb, 0.05, 5))
    shuffled = [uids[i] for i in perm]
    assert _rejected(shuffled, decide_cluster(shuffled, scores[perm], emb[perm], 0.05, 5)) == first


def test_partition_of_several_clusters_decides_each_alone():
    import pyarrow as pa

    uids, scores, emb = planted(groups=4, size=3, singles=4, seed=2)
    clusters = np.arange(len(uids)) % 3
    table = pa.table({"file_index": pa.array(np.zeros(len(uids), np.int32)), "uid": uids, "score": scores,
                      "cluster": pa.array(clusters.astype(np.int32)), "emb": embedding_bytes(emb)})
    out = decide_partition(table, eps=0.05, block_rows=4).to_pylist()
    expected = {}
    for k in range(3):
        idx = np.flatnonzero(clusters == k)
        expected.update(brute_force([uids[i] for i in idx], scores[idx], emb[idx], 0.05))
    assert {r["uid"]: r["kept_uid"] for r in out if r["kept_uid"]} == expected
    assert all(-1.0 <= r["nn_similarity"] <= 1.0001 for r in out)


def test_embedding_bytes_round_trip_as_float16():
    emb = normalised(np.random.default_rng(0).normal(size=(5, 16)))
    back = binary_matrix(embedding_bytes(emb).slice(1, 3))
    np.testing.assert_allclose(back.astype(np.float32), emb[1:4], atol=1e-3)


def test_kmeans_and_assignment_find_planted_clusters():
    rng = np.random.default_rng(0)
    centres = normalised(rng.normal(size=(4, 16)))
    emb = normalised(np.repeat(centres, 50, axis=0) + 0.05 * rng.normal(size=(200, 16)))
    centroids = train_centroids(emb, clusters=4, iterations=10, seed=0)
    labels = assign(emb, centroids, block_rows=33)
    assert all(len(set(labels[i * 50 : (i + 1) * 50])) == 1 for i in range(4))
    assert len(set(labels)) == 4
    np.testing.assert_array_equal(train_centroids(emb, 4, 10, 0), centroids)  # same sample, same centroids


def test_training_sample_depends_on_the_uids_only():
    uids = [f"uid{i}" for i in range(1000)]
    emb = np.arange(1000, dtype=np.float32)[:, None]
    chosen, rows = sample_rows(uids, emb, 0.1)
    again, _ = sample_rows(uids[::-1], emb[::-1], 0.1)
    assert sorted(chosen) == sorted(again) and 50 < len(chosen) < 150
    assert [uids[int(r[0])] for r in rows] == chosen


def test_the_report_draws_the_nearest_neighbour_histogram_a_semdedup_stage_counted(tmp_path):
    import json

    from jobs.stages.report import stage_histograms
    from curation.stage import StageDir

    hist = {"edges": [-1.0, 0.0, 1.0], "counts": [3, 4], "rows": 7}
    (tmp_path / "_stats.json").write_text(json.dumps({"stage": "semdedup", "nn_similarity_histogram": hist}))
    (tmp_path / "_SUCCESS").write_bytes(b"")
    [drawn] = stage_histograms(StageDir(str(tmp_path), "semdedup"))
    assert list(drawn.counts) == [3, 4] and drawn.png.startswith("data:image/png")


def test_the_second_sample_config_runs_semdedup_after_annotate_with_embeddings():
    from jobs.stages.config import load_config

    cfg = load_config("configs/sample-semdedup.toml")
    assert cfg.pipeline.stages[-2:] == ("annotate", "semdedup") and cfg.annotate.embeddings == "vitb32"
    assert load_config("configs/sample.toml").pipeline.stages == ()  # the default run leaves semdedup out


def test_a_row_exactly_at_one_minus_eps_is_kept_and_one_above_it_is_rejected():
    # (1, 0) . (3, 4) / 5 = 0.6 exactly in float32, and float32(1 - 0.4) is the same number: not above the threshold
    a, b = np.array([1.0, 0.0]), np.array([3.0, 4.0])
    emb = np.stack([a, b])
    assert np.float32((normalised(emb) @ normalised(emb).T)[0, 1]) == np.float32(1.0 - 0.4)
    for block_rows in (1, 2048):
        at = decide_cluster(["a", "b"], np.array([2.0, 1.0]), emb, eps=0.4, block_rows=block_rows)
        assert list(at["kept_by"]) == [-1, -1]
        assert at["nn_similarity"][1] == np.float32(0.6)
        above = decide_cluster(["a", "b"], np.array([2.0, 1.0]), emb, eps=0.41, block_rows=block_rows)
        assert list(above["kept_by"]) == [-1, 0]
        assert above["similarity"][1] == np.float32(0.6)
    assert brute_force(["a", "b"], np.array([2.0, 1.0]), emb, eps=0.4) == {}
    assert brute_force(["a", "b"], np.array([2.0, 1.0]), emb, eps=0.41) == {"b": "a"}
