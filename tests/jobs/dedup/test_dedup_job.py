"""The dedup and hash-index Spark jobs in local[2]: equal to the pure decisions, accounted, carrying
the input's columns, independent of partitioning, resumable; hash lists from folders, tars, parquet."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.stages.config import Config, DedupOptions
from jobs.stages.dedup import SettingsChangedError, final_shard
from curation.imagehash import hamming, phash
from curation.stage import SHARDS, StageDir
from filters.dedup import (
    BLOCKLIST,
    KEYS,
    DedupRules,
    KeyRules,
    LinkRules,
    components,
    decide,
    phash_to_int64,
    text_key,
)
from jobs.dedup import job
from jobs import hash_index
from jobs.dedup import decide as dedup_decide
from jobs.cli import app
from schemas import FETCHED, HASH_LIST, UNIQUE
from tests.conftest import shared
from tests.filters.dedup.test_dedup import NEAR_K, PHOTOS, photo_rows

pytestmark = pytest.mark.spark

RULES = DedupRules(links=LinkRules(max_distance=NEAR_K))


def fetched_rows() -> list[dict]:
    """FETCHED rows (plus an extra column the stage must carry) from real photos and their copies,
    a same-caption copy, a same-image other-caption copy and an undecodable image."""
    rows = []
    for r in photo_rows():
        rows.append(
            {
                "uid": r["uid"], "url": f"https://img.example/{r['uid']}", "text": r["text"], "page_url": None,
                "source_file": "crawl-0.warc.wat.gz", "text_original": None, "status": "success",
                "error_message": None, "width": r["pixels"], "height": 1, "image_bytes": r["data"],
                "image_format": "JPEG", "bytes_original": len(r["data"]), "crawl_note": f"note {r['uid']}",
            }
        )
    first = rows[0]
    rows.append({**first, "uid": "same-pair", "width": 1, "crawl_note": "x"})
    rows.append({**first, "uid": "same-image", "text": "Another caption", "width": 1, "crawl_note": "y"})
    rows.append({**first, "uid": "broken", "image_bytes": b"\xff\xd8 not really a jpeg", "crawl_note": "z"})
    return rows


def write_fetched(folder, rows: list[dict], files: int) -> str:
    schema = FETCHED.arrow_schema().append(pa.field("crawl_note", pa.string()))
    table = pa.Table.from_pylist(rows, schema=schema)
    (folder / "data").mkdir(parents=True)
    step = -(-len(rows) // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), folder / "data" / f"part-{i:05d}.parquet")
    return str(folder)


def expected_decisions(rows: list[dict], rules: DedupRules, blocklist: pa.Table | None = None) -> list[tuple]:
    hashable = [r for r in rows if r["uid"] != "broken"]
    keys = KEYS.from_pylist(
        [
            {"shard": 0, "row": i, "uid": r["uid"], "phash": int(phash_to_int64([phash(r["image_bytes"])])[0]),
             "text_key": text_key(r["text"]), "pixels": r["width"] * r["height"]}
            for i, r in enumerate(hashable)
        ]
    )
    return sorted((d["uid"], d["reason"], d["detail"]) for d in decide(keys, rules, blocklist).to_pylist())


def _rejected(stage: StageDir) -> list[tuple]:
    return sorted((r["uid"], r["reason"], r["detail"]) for r in stage.read("rejected").to_pylist() if r["reason"] != "not_decodable")


def _kept(stage: StageDir) -> list[tuple]:
    return sorted((r["uid"], r["image_phash"], r["crawl_note"]) for r in stage.read().to_pylist())


def _config(rules: DedupRules = RULES) -> Config:
    return Config(dedup=DedupOptions(rules=rules))


def test_job_equals_the_pure_decisions_and_carries_every_column(spark, tmp_path):
    rows = fetched_rows()
    src = write_fetched(tmp_path / "fetched", rows, files=3)
    listed_file = shared("images", "photos", PHOTOS[1])
    index_stats = hash_index.run(spark, [f"coco-train2017={listed_file}"], str(tmp_path / "hashes"), _config())
    assert index_stats["sets"] == {"coco-train2017": 1}

    stats = job.run(spark, src, str(tmp_path / "out"), _config(), blocklist=[str(tmp_path / "hashes")])

    blocklist = BLOCKLIST.from_pylist([{"hash": int(phash_to_int64([phash(listed_file.read_bytes())])[0]), "set_name": "coco-train2017"}])
    stage = StageDir(str(tmp_path / "out"), "dedup")
    assert _rejected(stage) == expected_decisions(rows, RULES, blocklist)
    reasons = stats["rejected"]
    assert {"eval_set_match", "duplicate_pair", "duplicate_phash", "near_duplicate", "not_decodable"} <= set(reasons)
    assert stats["rows_in"] == len(rows) == stats["rows_out"] + sum(reasons.values())
    assert stats["phash_mode"] == "exact" and stats["near_join"]["pairs"] > 0
    out = stage.read()
    assert set(UNIQUE.names) | {"crawl_note"} <= set(out.column_names)
    by_uid = {r["uid"]: r for r in rows}
    for r in out.to_pylist():
        assert r["image_phash"] == phash(r["image_bytes"])
        assert r["crawl_note"] == by_uid[r["uid"]]["crawl_note"]
    assert [r["detail"] for r in stage.read("rejected").to_pylist() if r["uid"] == "broken"] == ["not an image format Pillow knows (20 bytes)"]


def test_output_does_not_depend_on_files_partitions_or_where_components_run(spark, tmp_path, monkeypatch):
    rows = fetched_rows()
    one = write_fetched(tmp_path / "one", rows, files=1)
    many = write_fetched(tmp_path / "many", rows[::-1], files=5)
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set("spark.sql.shuffle.partitions", "1")
        job.run(spark, one, str(tmp_path / "a"), _config())
        spark.conf.set("spark.sql.shuffle.partitions", "7")
        monkeypatch.setattr(dedup_decide, "DRIVER_EDGES_LIMIT", 0)  # large-star / small-star in Spark
        stats = job.run(spark, many, str(tmp_path / "b"), _config())
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)
    assert stats["components_on"] == "spark"
    a, b = StageDir(str(tmp_path / "a"), "dedup"), StageDir(str(tmp_path / "b"), "dedup")
    assert _kept(a) == _kept(b)
    assert _rejected(a) == _rejected(b) == expected_decisions(rows, RULES)


def test_components_in_spark_equal_scipy_on_chains_and_stars(spark):
    rng = np.random.default_rng(1)
    chain = [(i, i + 1) for i in range(100, 140)]  # a long chain: many label-propagation steps
    star = [(500, i) for i in range(501, 530)]
    random_edges = [tuple(e) for e in rng.integers(1000, 1300, (150, 2)).tolist()]
    edges = [e for e in chain + star + random_edges + [(-5, 7_000_000_000_000)] if e[0] != e[1]]
    pairs = spark.createDataFrame(edges, "a long, b long")
    labels, rounds = dedup_decide.connected_components(pairs)
    got = {r["node"]: r["label"] for r in labels.collect()}
    a, b = np.array(edges).T
    assert got == components(a, b)
    assert rounds < 20


def test_rerun_resumes_a_partial_run_and_refuses_other_rules(spark, tmp_path):
    rows = fetched_rows()
    src = write_fetched(tmp_path / "fetched", rows, files=3)
    out = tmp_path / "out"
    job.run(spark, src, str(out), _config())
    before = _kept(StageDir(str(out), "dedup")), _rejected(StageDir(str(out), "dedup"))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    job.run(spark, src, str(out), _config())  # complete: nothing is touched
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    for sub in ("data", "rejected"):
        (out / sub / f"{final_shard(1)}.parquet").unlink()
    (out / SHARDS / f"{final_shard(1)}.json").unlink()
    (out / "_SUCCESS").unlink()
    with pytest.raises(SettingsChangedError, match="overwrite"):
        job.run(spark, src, str(out), _config(DedupRules(links=LinkRules(max_distance=2))))
    stats = job.run(spark, src, str(out), _config())
    assert (_kept(StageDir(str(out), "dedup")), _rejected(StageDir(str(out), "dedup"))) == before
    assert stats["rows_in"] == len(rows)


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_hash_index_reads_folders_tars_and_parquet(spark, tmp_path):
    folder = tmp_path / "val2017"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(_jpeg(i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (folder / "annotations.json").write_text("{}")
    with tarfile.open(tmp_path / "flickr-00000.tar", "w") as tar:
        for i in (10, 11):
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            data = _jpeg(i)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"image": [{"bytes": _jpeg(20), "path": "a.jpg"}, {"bytes": _jpeg(21), "path": "b.jpg"}]}),
                   tmp_path / "cc3m.parquet")
    sources = [str(folder), f"flickr30k={tmp_path / 'flickr-00000.tar'}", str(tmp_path / "cc3m.parquet")]

    stats = hash_index.run(spark, sources, str(tmp_path / "hashes"), _config())

    assert stats["sets"] == {"val2017": 3, "flickr30k": 2, "cc3m": 2}
    assert stats["rejected"] == {"not_decodable": 1} and stats["skipped_file_count"] == 1
    hashes = StageDir(str(tmp_path / "hashes"), "hash_index").read(table=HASH_LIST)
    assert sorted(hashes.column("image_phash").to_pylist()) == sorted(phash(_jpeg(i)) for i in (0, 1, 2, 10, 11, 20, 21))


def test_cli_dedup_with_a_missing_input_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["dedup", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "-k", "3"])
    assert result.exit_code == 2
    assert "nope" in result.output
    result = CliRunner().invoke(app, ["dedup", "--input", "x", "--output", "o", "--max-distance", "99"])
    assert result.exit_code == 2 and "max_distance" in result.output
    result = CliRunner().invoke(app, ["dedup", "--input", "x", "--output", "o", "--key", "dhash"])
    assert result.exit_code == 2 and "key must be one of ['phash', 'robust']" in result.output


@pytest.mark.parametrize("command", ["dedup", "hash-index"])
def test_commands_have_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


# --- robust key and blank images ------------------------------------------------------------------


def _robust_rows() -> list[dict]:
    """A real photo, its mirrored, EXIF-rotated and corner-cropped (10 % of the area) copies, two blank images, two different transparent
    logos and one logo's white-background copy, as FETCHED rows."""
    import io

    from PIL import Image

    def encode(image, fmt="JPEG", **kw):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        return buf.getvalue()

    photo = Image.open(shared("images", "photos", "skimage-chelsea.png")).convert("RGB")
    photo.thumbnail((240, 240))
    exif = Image.Exif()
    exif[0x0112] = 6
    logo0 = shared("images", "odd", "jimagehash-transparent0.png").read_bytes()
    rgba = Image.open(io.BytesIO(logo0)).convert("RGBA")
    images = {
        "photo": (encode(photo), 2),
        "photo-mirrored": (encode(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), 1),
        "photo-exif6": (encode(photo.transpose(Image.Transpose.ROTATE_90), exif=exif), 1),
        "photo-cropped": (encode(photo.crop((0, 0, photo.width * 95 // 100, photo.height * 95 // 100))), 1),
        "blank-white": (shared("images", "odd", "jimagehash-White.jpg").read_bytes(), 1),
        "blank-black": (shared("images", "odd", "te-small.jpg").read_bytes(), 1),
        "logo-0": (logo0, 2),
        "logo-1": (shared("images", "odd", "jimagehash-transparent1.png").read_bytes(), 2),
        "logo-0-on-white": (encode(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"), "PNG"), 1),
    }
    return [
        {"uid": uid, "url": f"https://img.example/{uid}", "text": f"caption {uid}", "page_url": None,
         "source_file": "crawl-0.warc.wat.gz", "text_original": None, "status": "success", "error_message": None,
         "width": pixels, "height": 1, "image_bytes": data, "image_format": "JPEG", "bytes_original": len(data),
         "crawl_note": uid}
        for uid, (data, pixels) in images.items()
    ]


def test_robust_key_job_matches_flips_and_exif_rejects_blank_and_keeps_different_logos(spark, tmp_path):
    from curation.imagehash import keys_many

    rows = _robust_rows()
    src = write_fetched(tmp_path / "fetched", rows, files=2)
    rules = DedupRules(keys=KeyRules(key="robust"), links=LinkRules(max_distance=4))
    stats = job.run(spark, src, str(tmp_path / "out"), _config(rules))
    stage = StageDir(str(tmp_path / "out"), "dedup")
    got = {r["uid"]: (r["reason"], r["detail"]) for r in stage.read("rejected").to_pylist()}
    assert {u: r for u, (r, _) in got.items() if r == "blank_image"} == {"blank-white": "blank_image", "blank-black": "blank_image"}
    assert {got[u][1].split()[0] for u in ("photo-mirrored", "photo-exif6", "photo-cropped")} == {"photo"}  # the kept uid first
    assert got["photo-cropped"][1].startswith("photo robust")  # then which key linked it, how far, to which key
    assert got["logo-0-on-white"] in {("duplicate_phash", "logo-0"), ("near_duplicate", "logo-0")}
    kept = {r["uid"]: r for r in stage.read().to_pylist()}
    assert set(kept) == {"photo", "logo-0", "logo-1"}
    for r in kept.values():
        assert r["image_phash"] == phash(r["image_bytes"])  # the released column stays imagehash's
    assert stats["rows_in"] == len(rows) == stats["rows_out"] + sum(stats["rejected"].values())

    # the Spark decisions equal the pure ones on the same keys
    results = keys_many([r["image_bytes"] for r in rows])
    crop, photo = results[[r["uid"] for r in rows].index("photo-cropped")], results[0]
    assert hamming(crop.key, photo.key) > 4 >= min(hamming(crop.key, w) for w in photo.windows)  # a window match
    keys = KEYS.from_pylist(
        [
            {"shard": 0, "row": i, "uid": r["uid"], "phash": int(phash_to_int64([k.phash])[0]),
             "robust": int(phash_to_int64([k.key])[0]), "text_key": text_key(r["text"]), "pixels": r["width"],
             "windows": phash_to_int64(list(k.windows)).tolist()}
            for i, (r, k) in enumerate(zip(rows, results)) if not k.blank
        ]
    )
    pure = sorted((d["uid"], d["reason"], d["detail"]) for d in decide(keys, rules).to_pylist())
    assert sorted((u, r, d) for u, (r, d) in got.items() if r != "blank_image") == pure

    # plain pHash with reject_blank off: the blank images stay and are not duplicates of anything (nor of
    # each other); the mirrored copy is missed and the two logos collide (imagehash sees two black images)
    job.run(spark, src, str(tmp_path / "keep"), _config(DedupRules(keys=KeyRules(reject_blank=False), links=LinkRules(max_distance=4))))
    keep = StageDir(str(tmp_path / "keep"), "dedup")
    assert {"blank-white", "blank-black", "photo", "photo-mirrored", "logo-0"} <= {r["uid"] for r in keep.read().to_pylist()}
    assert [(r["reason"], r["detail"]) for r in keep.read("rejected").to_pylist() if r["uid"] == "logo-1"] == [("duplicate_phash", "logo-0")]


def test_verified_near_duplicates_in_spark_equal_the_reference(spark, tmp_path):
    """[dedup.rules] verify with rotated / deep / occlusion windows: the job's decisions (and details with
    the verdicts) equal the in-memory reference's on real photos, their turned copies and banner copies."""
    from tests.filters.dedup.test_verify import ON, decided, edited_rows

    images = edited_rows()
    first = fetched_rows()[0]
    rows = [{**first, "uid": uid, "text": uid, "width": 100, "height": 1, "image_bytes": data} for uid, data in images.items()]
    src = write_fetched(tmp_path / "fetched", rows, files=2)
    stats = job.run(spark, src, str(tmp_path / "out"), _config(ON))
    got = {r["uid"]: r["detail"] for r in StageDir(str(tmp_path / "out"), "dedup").read("rejected").to_pylist()}
    assert got == decided(images, ON)
    assert any(" verified inliers=" in d for d in got.values())
    assert stats["verified"]["candidates"] >= stats["verified"]["pairs"] > 0
    # the links within verify_link_distance were linked without their keypoints joined on (and the details,
    # verdicts included, still equal the reference's above)
    assert 0 < stats["verified"]["pairs_checked"] < stats["verified"]["candidates"]
