"""The annotate stage's pure parts: ids, chunking, the annotated table, collision resolution."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from curation.lifecycle import input_files
from jobs.stages.annotate import (
    SPEC,
    InputError,
    annotate_task,
    collision_groups,
    plan_chunks,
    read_chunk,
    reassign_ids,
    row_id,
    word_count,
)
from curation.stage import StageDir
from models.runner import RunOptions
from schemas import ANNOTATED
from tests.models.fixtures import photo_bytes, tiny_models, tiny_models_toml, write_unique  # noqa: F401

COYO_17 = [
    "id", "url", "text", "width", "height", "image_phash", "text_length", "word_count", "num_tokens_bert",
    "num_tokens_gpt", "num_faces", "clip_similarity_vitb32", "clip_similarity_vitl14", "nsfw_score_opennsfw2",
    "nsfw_score_gantman", "watermark_score", "aesthetic_score_laion_v2",
]  # fmt: skip


def test_id_is_the_top_63_bits_of_the_uids_md5():
    uid = hashlib.md5(b"x").hexdigest()
    expected = int.from_bytes(hashlib.md5(uid.encode()).digest()[:8], "big") >> 1
    assert row_id(uid) == expected and 0 <= expected < 2**63
    assert row_id(uid, salt=1) != row_id(uid)
    assert row_id(uid, bits=8) < 256


def test_annotate_reads_columns_the_unique_table_has():
    from jobs.stages.annotate import INPUT_COLUMNS
    from schemas.tables import UNIQUE

    assert set(INPUT_COLUMNS) <= set(UNIQUE.names)


def test_word_count_splits_on_any_whitespace():
    assert word_count(["a  b\tc\n", "", "one"]).tolist() == [3, 0, 1]


def test_collisions_keep_the_smallest_uid_and_move_the_others_to_free_ids():
    groups = collision_groups([{"id": 5, "uid": "b"}, {"id": 5, "uid": "a"}, {"id": 7, "uid": "c"}])
    assert groups == {5: ["b", "a"]}
    taken = {5, 7}
    new = reassign_ids(groups, taken, bits=63)
    assert list(new) == ["b"] and new["b"] == row_id("b", 1) and new["b"] in taken
    # with 2-bit ids the salts must be searched until a free id is found
    tiny = reassign_ids({0: ["a", "b", "c"]}, {0, 1}, bits=2)
    assert set(tiny.values()) == {2, 3}


def test_chunks_follow_row_groups_and_cover_every_row(tmp_path):
    folder = write_unique(tmp_path / "unique", [b"x"] * 11, files=2, row_group_size=2)
    files = input_files(SPEC, [str(folder)])
    chunks = plan_chunks(files, rows_per_shard=4)
    assert [c.shard for c in chunks] == ["part-00000-0000", "part-00000-0001", "part-00001-0000", "part-00001-0001"]
    uids = [u for c in chunks for u in read_chunk(c).column("uid").to_pylist()]
    all_uids = [u for f in files for u in pa.parquet.read_table(f).column("uid").to_pylist()]
    assert uids == all_uids


def test_input_without_image_phash_is_refused_clearly(tmp_path):
    folder = write_unique(tmp_path / "unique", [b"x"] * 2)
    table = pa.parquet.read_table(folder / "data" / "part-00000.parquet").drop_columns(["image_phash"])
    pa.parquet.write_table(table, folder / "data" / "part-00000.parquet")
    with pytest.raises(InputError, match=r"lacks columns \['image_phash'\]"):  # at planning, on the driver
        input_files(SPEC, [str(folder)])
    chunk = plan_chunks([str(folder / "data" / "part-00000.parquet")], 10)[0]
    with pytest.raises(InputError, match=r"lacks columns \['image_phash'\]"):  # and in a task given such a file
        read_chunk(chunk)


def test_task_writes_all_coyo_columns_and_rejects_undecodable_images(tmp_path, tiny_models):
    images = photo_bytes(3) + [b"\x89PNG broken"]
    folder = write_unique(tmp_path / "unique", images)
    stage = StageDir(str(tmp_path / "out"), "annotate")
    stage.prepare()
    chunk = plan_chunks(input_files(SPEC, [str(folder)]), 10)[0]
    stats = annotate_task(stage, chunk, tiny_models, RunOptions(device="cpu", batch_size=2))
    assert (stats.rows_in, stats.rows_out, stats.rejected) == (4, 3, {"not_decodable": 1})
    kept = stage.read(table=ANNOTATED)
    assert kept.schema.names[:17] == COYO_17
    assert kept.schema == ANNOTATED.arrow_schema()
    assert kept.column("nsfw_score_opennsfw2").null_count == 3  # not configured in the tiny models
    for col in ("clip_similarity_vitb32", "aesthetic_score_laion_v2", "num_faces", "num_tokens_gpt", "watermark_score"):
        assert kept.column(col).null_count == 0, col
    assert kept.column("image_phash").to_pylist() == ["0000000000000000", "0000000000000001", "0000000000000002"]
    assert kept.column("width").to_pylist() == [1000, 1001, 1002]
    assert kept.column("sha256").to_pylist() == [hashlib.sha256(b).hexdigest() for b in images[:3]]  # carried from unique
    assert kept.column("md5").to_pylist() == [hashlib.md5(b).hexdigest() for b in images[:3]]
    assert kept.schema.names.index("sha256") > 16 and kept.schema.names.index("md5") > 16  # after COYO's 17
    assert stats.extra["nulls"]["nsfw_score_gantman"] == 3
    again = annotate_task(stage, chunk, tiny_models, RunOptions(device="cpu", batch_size=2))
    assert again.extra == {"skipped": True}
