"""jobs/stages/safety.py: lists loaded once per process (again when the file changes), from a local path or
S3, a malformed list refused naming the list, and the screen's verdicts."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from curation.errors import ConfigError
from curation.storage import StorageError
from filters.safety import SafetyList, SafetyOptions
from jobs.stages import safety
from schemas import Reason


def _write(path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_a_list_is_read_once_per_process_and_again_when_it_changes(tmp_path, monkeypatch):
    digest = hashlib.md5(b"one").hexdigest()
    entry = SafetyList("l", _write(tmp_path / "l.txt", [digest]), "image_md5")
    reads = []
    real = safety.storage.read_bytes
    monkeypatch.setattr(safety.storage, "read_bytes", lambda uri, options=None: reads.append(uri) or real(uri, options))
    first = safety.load_list(entry)
    assert safety.load_list(entry) is first and len(reads) == 1
    _write(tmp_path / "l.txt", [digest, hashlib.md5(b"two").hexdigest()])
    os.utime(tmp_path / "l.txt", ns=(1, 1))  # another version of the file
    assert len(safety.load_list(entry)) == 2 and len(reads) == 2


def test_a_malformed_or_missing_list_stops_with_the_list_named(tmp_path):
    bad = SafetyList("ncmec", _write(tmp_path / "bad.txt", ["# ok", "abc"]), "image_md5")
    with pytest.raises(ConfigError, match=r"safety list 'ncmec' .*line 2 "):
        safety.check_lists(SafetyOptions((bad,)))
    with pytest.raises(StorageError):
        safety.check_lists(SafetyOptions((SafetyList("gone", str(tmp_path / "gone.txt"), "url_md5"),)))


def test_a_list_on_s3_is_read_through_storage(s3_server, s3_bucket):
    bucket, client = s3_bucket
    url = "http://img.example.com/listed.jpg"
    client.put_object(Bucket=bucket, Key="lists/urls.txt", Body=(hashlib.sha256(url.encode()).hexdigest() + "\n").encode())
    options = SafetyOptions((SafetyList("urls", f"s3://{bucket}/lists/urls.txt", "url_sha256"),))
    assert safety.check_lists(options, s3_server) == {"urls": 1}
    screen = safety.load_screen(options, s3_server)
    assert screen.check_urls([url, url + "?x"]) == [(Reason.BLOCKLISTED_URL, "safety list urls (url_sha256)"), None]


def test_the_screen_names_the_first_matching_list_and_checks_every_image_kind(tmp_path):
    body = b"\xff\xd8 some image bytes"
    digests = {a: hashlib.new(a, body).digest() for a in ("md5", "sha1", "sha256")}
    lists = SafetyOptions((
        SafetyList("sha1s", _write(tmp_path / "a.txt", [digests["sha1"].hex()]), "image_sha1"),
        SafetyList("md5s", _write(tmp_path / "b.txt", [digests["md5"].hex()]), "image_md5"),
        SafetyList("sha256s", _write(tmp_path / "c.txt", ["00" * 32]), "image_sha256"),
    ))
    screen = safety.load_screen(lists)
    assert screen.image_algorithms == ("md5", "sha1", "sha256")
    assert screen.check_image(body, digests) == (Reason.BLOCKLISTED_IMAGE, "safety list sha1s (image_sha1)")
    other = {a: hashlib.new(a, b"other").digest() for a in digests}
    assert screen.check_image(b"other", other) is None
    assert np.array_equal(screen.images[2][1].hi, np.zeros(1, np.uint64))
