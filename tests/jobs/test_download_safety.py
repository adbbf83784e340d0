"""Safety hash lists in the download stage (Spark local) against the loopback server: a listed URL is never
requested, a listed image is rejected as its body arrives, kept rows carry the sha256 and md5 of the bytes the
server sent, and no file of the run holds a matched image's bytes, the URL or a listed hash."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from filters.image import ImageRules, process_image
from filters.safety import SafetyList, SafetyOptions
from jobs import download as job
from jobs.stages.config import Config
from curation.stage import StageDir
from schemas import FETCHED, Reason
from tests.http_server import generated_cases, named_photo
from tests.jobs.test_download_job import OPTS as SMALL_BODIES
from tests.jobs.test_download_job import make_text_ok

pytestmark = pytest.mark.spark
OPTS = replace(SMALL_BODIES, rules=ImageRules())  # large.jpg (785 KB, several read chunks) is kept


def _list(path: Path, hashes: list[str]) -> str:
    path.write_text("# test list\n" + "".join(h + "\n" for h in hashes))
    return str(path)


def _needles(blobs: list[bytes], texts: list[str]) -> list[bytes]:
    """What must appear nowhere: each blob, windows of it, and each text in UTF-8."""
    out = [t.encode() for t in texts]
    for blob in blobs:
        # windows start past the first 2 KB: a JPEG's header (JFIF, quantisation and Huffman tables) is the same in
        # every file one encoder writes at one quality, so it is in the kept images too
        out += [blob] + [blob[k : k + 256] for k in range(2048, len(blob) - 256, max(256, len(blob) // 8))]
    return out


def _scan(root: Path, needles: list[bytes]) -> list[tuple[str, int]]:
    """(file, needle index) for every needle found in a file's bytes or, for parquet, in its decoded values."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        contents = [path.read_bytes()]
        if path.suffix == ".parquet":
            for column in pq.read_table(path).columns:
                contents += [v if isinstance(v, bytes) else str(v).encode() for v in column.to_pylist() if v is not None]
        found += [(str(path), k) for k, n in enumerate(needles) if any(n in c for c in contents)]
    return found


def test_listed_url_and_image_are_rejected_early_and_written_nowhere(spark, image_server, tmp_path):
    kept_paths = ["/gen/photo.jpg", "/gen/large.jpg", "/photo/kept.jpg"]
    listed_image, listed_url, listed_sha1 = "/photo/listed-image.jpg", "/photo/listed-url.jpg", "/photo/listed-sha1.jpg"
    urls = [image_server.url(p) for p in [*kept_paths, listed_image, listed_url, listed_sha1]]
    image = named_photo("listed-image.jpg")
    sha1_image = named_photo("listed-sha1.jpg")
    url = image_server.url(listed_url)
    lists_dir = tmp_path / "lists"
    lists_dir.mkdir()
    lists = SafetyOptions((
        SafetyList("urls", _list(lists_dir / "urls.txt", [hashlib.sha256(url.encode()).hexdigest()]), "url_sha256"),
        SafetyList("images", _list(lists_dir / "md5.txt", [hashlib.md5(image).hexdigest(), "0" * 32]), "image_md5"),
        SafetyList("sha1", _list(lists_dir / "sha1.txt", [hashlib.sha1(sha1_image).hexdigest()]), "image_sha1"),
    ))
    source = make_text_ok(tmp_path / "text_ok", urls)
    stats = job.run(spark, source, str(tmp_path / "run"), Config(download=OPTS, safety=lists))

    assert stats["rows_in"] == 6 and stats["rows_out"] == 3
    assert stats["rejected"] == {Reason.BLOCKLISTED_URL: 1, Reason.BLOCKLISTED_IMAGE: 2}
    stage = StageDir(str(tmp_path / "run"), "download")
    rejected = {r["detail"] for r in stage.read("rejected").to_pylist()}
    assert rejected == {"safety list urls (url_sha256)", "safety list images (image_md5)", "safety list sha1 (image_sha1)"}
    assert image_server.hits(listed_url) == 0  # never requested
    assert image_server.hits(listed_image) == 1

    sent = {"photo.jpg": generated_cases()["photo.jpg"][0], "large.jpg": generated_cases()["large.jpg"][0],
            "kept.jpg": named_photo("kept.jpg")}
    rows = {r["url"].rsplit("/", 1)[1]: r for r in stage.read(table=FETCHED).to_pylist()}
    assert sorted(rows) == sorted(sent)
    for name, body in sent.items():
        assert rows[name]["sha256"] == hashlib.sha256(body).hexdigest()
        assert rows[name]["md5"] == hashlib.md5(body).hexdigest()

    digests = [h(b) for b in (image, sha1_image) for h in (hashlib.md5, hashlib.sha1, hashlib.sha256)]
    digests += [hashlib.sha256(url.encode())]
    texts = [url, listed_url, listed_image, listed_sha1] + [d.hexdigest() for d in digests]
    stored = [process_image(b, OPTS.rules).image_bytes for b in (image, sha1_image)]  # as a kept row would hold them
    needles = _needles([image, sha1_image, *stored] + [d.digest() for d in digests], texts)
    assert _scan(tmp_path / "run", needles) == []
    # the scan sees what is there: a kept image's original hash is found in the kept shard
    assert _scan(tmp_path / "run", [rows["kept.jpg"]["sha256"].encode()])


def test_a_pdq_list_rejects_a_picture_near_a_listed_hash(spark, image_server, tmp_path):
    pytest.importorskip("pdqhash")
    from filters.safety import pdq_hash

    digest, _ = pdq_hash(named_photo("pdq-listed.jpg"))
    bits = np.unpackbits(np.frombuffer(digest, np.uint8))
    bits[:20] ^= 1  # the list holds a hash 20 bits away (an edited copy's)
    near = np.packbits(bits).tobytes().hex()
    lists = SafetyOptions((SafetyList("pdq", _list(tmp_path / "pdq.txt", [near]), "pdq", distance=31),))
    urls = [image_server.url(p) for p in ["/photo/pdq-listed.jpg", "/photo/pdq-other.jpg"]]
    source = make_text_ok(tmp_path / "text_ok", urls, files=1)
    stats = job.run(spark, source, str(tmp_path / "run"), Config(download=OPTS, safety=lists))
    assert stats["rejected"] == {Reason.BLOCKLISTED_IMAGE: 1} and stats["rows_out"] == 1
    rejected = StageDir(str(tmp_path / "run"), "download").read("rejected").to_pylist()
    assert [r["detail"] for r in rejected] == ["safety list pdq (pdq)"]
    assert _scan(tmp_path / "run", _needles([named_photo("pdq-listed.jpg")], [near, digest.hex()])) == []
