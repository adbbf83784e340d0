"""The generated Common Crawl sample: reproducible, strictly well-formed, and as varied as promised."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from curation.crawl.reader import extract_file
from curation.sample.crawl_files import WARC_FILE, WAT_FILES, write_sample

HOST = "http://127.0.0.1:8765"
BAD_REASONS = {"corrupt_file", "truncated_record", "invalid_json", "no_crawl_records", "malformed_record",
               "invalid_encoding", "unparsable_html", "unreadable_file"}
NON_LATIN = re.compile(r"[\u0400-\u04ff\u0600-\u06ff\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict:
    return write_sample(str(tmp_path_factory.mktemp("sample")), seed=0)


@pytest.fixture(scope="module")
def extracted(sample) -> dict:
    return {Path(f).name: extract_file(f) for f in sample["files"]}


def _members(path: str) -> list[bytes]:
    """The decompressed gzip members of a file, one by one."""
    data, out = Path(path).read_bytes(), []
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(data) + d.flush())
        data = d.unused_data
    return out


def test_files_and_manifest(sample):
    assert [Path(f).name for f in sample["files"]] == [*WAT_FILES, WARC_FILE]
    assert sample["pages"] == 300
    assert 1000 <= sample["image_links"] <= 3000
    assert 140 <= len(sample["image_names"]) <= 150
    assert all(re.fullmatch(r"img-\d{5}\.jpg", n) for n in sample["image_names"])


def test_same_seed_byte_identical_other_seed_differs(sample, tmp_path):
    again = write_sample(str(tmp_path / "a"), seed=0)
    assert again["image_names"] == sample["image_names"]
    for a, b in zip(sample["files"], again["files"]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    other = write_sample(str(tmp_path / "b"), seed=1)
    assert Path(other["files"][0]).read_bytes() != Path(sample["files"][0]).read_bytes()


def test_host_and_page_count_parameters(tmp_path):
    small = write_sample(str(tmp_path), seed=3, pages=12, image_host="http://localhost:9/")
    assert small["pages"] == 12 and len(small["files"]) == 3
    text = b"".join(gzip.open(f).read() for f in small["files"])
    assert b"http://localhost:9/images/img-" in text and b"127.0.0.1:8765" not in text
    with pytest.raises(ValueError):
        write_sample(str(tmp_path), pages=2)


def test_one_record_per_gzip_member_with_exact_framing(sample):
    for path in sample["files"]:
        members = _members(path)
        assert members[0].startswith(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n")
        ids = set()
        for raw in members:
            head, sep, rest = raw.partition(b"\r\n\r\n")
            assert sep and raw.startswith(b"WARC/1.0\r\n")
            lines = head.split(b"\r\n")
            assert all(b"\n" not in line and b": " in line for line in lines[1:])
            headers = dict(line.decode().split(": ", 1) for line in lines[1:])
            length = int(headers["Content-Length"])
            assert len(rest) == length + 4 and rest.endswith(b"\r\n\r\n")  # the block, then CRLF CRLF
            assert re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", headers["WARC-Record-ID"])
            ids.add(headers["WARC-Record-ID"])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", headers["WARC-Date"])
        assert len(ids) == len(members)


def test_fastwarc_strict_reads_every_record_with_valid_digests(sample):
    for path in sample["files"]:
        n_members = len(_members(path))
        with open(path, "rb") as f:
            records = list(ArchiveIterator(f, parse_http=False, quirks_mode=False, strict_mode=True))
        assert len(records) == n_members
        # (records read without inplace: each holds its own block until verified)
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, parse_http=False, quirks_mode=False, strict_mode=True):
                assert rec.verify_block_digest()
        with open(path, "rb") as f:  # HTTP payload digests (request/response records)
            for rec in ArchiveIterator(f, parse_http=True, quirks_mode=False, strict_mode=True,
                                       record_types=WarcRecordType.request | WarcRecordType.response):
                assert rec.verify_payload_digest()


def test_wat_records_follow_common_crawl_envelope(sample):
    for path in sample["files"][:2]:
        members = _members(path)
        docs, refers = [], []
        for raw in members[1:]:
            head, _, rest = raw.partition(b"\r\n\r\n")
            assert b"Content-Type: application/json\r\n" in head and b"WARC-Type: metadata\r\n" in head
            refers.append(re.search(rb"WARC-Refers-To: (<urn:uuid:[^>]+>)", head).group(1).decode())
            docs.append(json.loads(rest[:-4]))
        for doc, ref in zip(docs, refers):
            assert doc["Container"]["Compressed"] is True and doc["Container"]["Gzip-Metadata"]["Header-Length"] == "10"
            assert doc["Envelope"]["Format"] == "WARC/1.0"
            assert doc["Envelope"]["WARC-Header-Metadata"]["WARC-Record-ID"] == ref
        kinds = Counter(d["Envelope"]["WARC-Header-Metadata"]["WARC-Type"] for d in docs)
        assert kinds["warcinfo"] == 1 and kinds["request"] == kinds["response"] == kinds["metadata"] == 100
        offsets = [int(d["Container"]["Offset"]) for d in docs]
        assert offsets[0] == 0 and offsets == sorted(offsets)
        html_meta = [d["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
                     for d in docs if d["Envelope"]["WARC-Header-Metadata"]["WARC-Type"] == "response"]
        assert len(html_meta) == 100 and all(m["Head"]["Title"] for m in html_meta)
        paths = Counter(link["path"] for m in html_meta for link in m["Links"])
        assert paths["IMG@/src"] > 300 and paths["A@/href"] > 100
        assert any("Base" in m["Head"] for m in html_meta)
        assert any("alt" not in link for m in html_meta for link in m["Links"] if link["path"] == "IMG@/src")


def test_warc_file_holds_fetches_with_html_in_several_charsets(sample):
    with open(sample["files"][2], "rb") as f:
        records = list(ArchiveIterator(f, parse_http=True, quirks_mode=False))
    types = Counter(str(r.record_type) for r in records)
    assert types == {"warcinfo": 1, "request": 100, "response": 100, "metadata": 100}
    responses = [r for r in records if r.record_type == WarcRecordType.response]
    assert {r.http_headers.status_code for r in responses} == {200}
    charsets = Counter(r.http_charset for r in responses)
    assert charsets["utf-8"] > 50 and set(charsets) - {"utf-8"}, charsets


def test_extraction_reads_everything_cleanly(sample, extracted):
    kept = 0
    reasons: Counter = Counter()
    for name, out in extracted.items():
        assert out.file_error is None, name
        reasons.update(out.rej_reasons)
        kept += len(out.uids)
    assert not BAD_REASONS & set(reasons), reasons
    assert reasons["empty_alt"] > 50 and reasons["unsupported_scheme"] > 20
    assert 300 <= kept <= 2500
    assert sum(len(o.uids) + len(o.rej_uids) for o in extracted.values()) == sample["image_links"]


def test_extracted_texts_are_varied(extracted):
    texts = [t for o in extracted.values() for t in o.texts]
    counts = Counter(texts)
    assert any(NON_LATIN.search(t) for t in texts)
    assert any(re.search(r"[äöüéèñ]", t) for t in texts)
    assert sum(1 for t in counts if re.fullmatch(r"[A-Za-z ,.'-]{20,}", t)) > 100  # plain English captions
    assert counts["Click here"] > 10 and counts["product image"] > 10
    assert any(len(t) > 1000 for t in texts) and any(len(t.split()) > 256 for t in texts)
    assert any(re.fullmatch(r"IMG_\d{4}\.JPG|DSC\d{5}", t) for t in texts)
    assert any("&amp;" in t or "&#39;" in t for t in texts)
    assert any(ord(c) > 0x1F000 for t in texts for c in t)  # emoji


def test_duplicate_pairs_across_pages_and_files(extracted):
    uid_files: dict[str, set[str]] = {}
    for name, out in extracted.items():
        for uid in out.uids:
            uid_files.setdefault(uid, set()).add(name)
    uids = Counter(u for o in extracted.values() for u in o.uids)
    assert max(uids.values()) > 10
    assert any(len(files) == 3 for files in uid_files.values())


@pytest.mark.parametrize("name", [*WAT_FILES, WARC_FILE])
def test_url_forms_resolve_in_every_file(extracted, name):
    out = extracted[name]
    urls = out.urls
    assert sum(u.startswith(f"{HOST}/images/img-") for u in urls) > len(urls) // 2
    assert any(u.startswith("https://static.example.org/assets/images/") for u in urls)  # via <base href>
    assert any(re.match(r"https?://cdn\.example\.org/img-", u) for u in urls)  # protocol-relative
    assert any(re.match(r"https?://[a-z.]*example\.[a-z]+/(images|img)/img-", u) for u in urls)  # relative
    details = [d for r, d in zip(out.rej_reasons, out.rej_details) if r == "unsupported_scheme"]
    assert {d.split(":", 1)[0] for d in details} & {"data", "javascript", "file", "ftp", "about"}
    assert all(page.startswith(("http://", "https://")) for page in out.page_urls)


def test_non_utf8_pages_decode_to_the_generated_alts(sample, extracted):
    with open(sample["files"][2], "rb") as f:
        charset = {r.headers["WARC-Target-URI"]: r.http_charset
                   for r in ArchiveIterator(f, parse_http=True, record_types=WarcRecordType.response)}
    out = extracted[WARC_FILE]
    by_charset: dict[str, list[str]] = {}
    for text, page in zip(out.texts, out.page_urls):
        by_charset.setdefault(charset[page], []).append(text)
    assert any(re.search(r"[\u0400-\u04ff]", t) for t in by_charset["windows-1251"])
    latin = by_charset.get("windows-1252", []) + by_charset.get("iso-8859-1", [])
    assert any(re.search(r"[àâäçéèêëîïñóôöùûüß]", t) for t in latin)
