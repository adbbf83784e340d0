"""Extraction rules and bad input, on real crawl files (../shared/data) and crafted records."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from curation.crawl import wat as crawl_wat
from curation.crawl.links import FileExtraction, make_uid, resolve_url, target_uri
from curation.crawl.reader import collapse_duplicates, extract_file, html_image_links
from schemas import Reason
from tests.conftest import shared


def warc_member(payload: bytes, rtype: str = "metadata", uri: str = "http://example.com/page.html",
                ctype: str = "application/json", length: int | None = None) -> bytes:
    """One gzip member holding one WARC record, as Common Crawl writes them."""
    head = (
        f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-05-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:{hashlib.md5(payload).hexdigest()}>\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(payload) if length is None else length}\r\n\r\n"
    ).encode()
    return gzip.compress(head + payload + b"\r\n\r\n", mtime=0)


def wat_payload(links: list[dict], page: str = "http://example.com/dir/page.html", base: str | None = None) -> bytes:
    head = {"Title": "t"} | ({"Base": base} if base else {})
    doc = {
        "Container": {"Filename": "x.warc.gz"},
        "Envelope": {
            "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": page},
            "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Head": head, "Links": links}}},
        },
    }
    return json.dumps(doc).encode()


def img(url: str, alt: str | None = "a photo of a cat") -> dict:
    return {"path": "IMG@/src", "url": url} | ({"alt": alt} if alt is not None else {})


def write(tmp_path, name: str, *members: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(members))
    return str(path)


def reasons(result: FileExtraction) -> Counter:
    return Counter(result.rej_reasons)


# --- URL and alt rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "base", "expected"),
    [
        ("http://cdn.example.org/a.jpg", "http://example.com/", "http://cdn.example.org/a.jpg"),
        ("/img/a.jpg", "http://example.com/dir/page.html", "http://example.com/img/a.jpg"),
        ("a.jpg", "http://example.com/dir/page.html", "http://example.com/dir/a.jpg"),
        ("../a.jpg", "http://example.com/dir/sub/page.html", "http://example.com/dir/a.jpg"),
        ("//cdn.example.org/a.jpg", "https://example.com/", "https://cdn.example.org/a.jpg"),
        ("  https://example.com/a.jpg\n", None, "https://example.com/a.jpg"),
        ("HTTP://Example.com/a.jpg", "http://example.com/", "http://Example.com/a.jpg"),
    ],
)
def test_urls_are_resolved_like_a_browser(raw, base, expected):
    assert resolve_url(raw, base) == (expected, None, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("javascript:void(0)", Reason.UNSUPPORTED_SCHEME),
        ("data:image/png;base64,iVBORw0KGgo=", Reason.UNSUPPORTED_SCHEME),
        ("file:///etc/passwd", Reason.UNSUPPORTED_SCHEME),
        ("ftp://example.com/a.jpg", Reason.UNSUPPORTED_SCHEME),
        ("mailto:a@example.com", Reason.UNSUPPORTED_SCHEME),
        ("", Reason.INVALID_URL),
        ("http:///a.jpg", Reason.INVALID_URL),
    ],
)
def test_odd_urls_are_rejected_with_a_reason(raw, reason):
    url, got, detail = resolve_url(raw, "http://example.com/")
    assert url is None and got == reason and detail


def test_relative_url_without_page_url_is_invalid():
    assert resolve_url("a.jpg", None)[1] == Reason.INVALID_URL


def test_uid_is_cc2dataset_md5_of_alt_then_url():
    assert make_uid("a cat", "http://e.com/c.jpg") == hashlib.md5(b"a cathttp://e.com/c.jpg").hexdigest()


def test_link_rules_keep_or_give_one_reason_each():
    out = FileExtraction("f")
    out.add_link("http://e.com/1.jpg", "a dog on a beach", None, None)
    out.add_link("http://e.com/2.jpg", "", None, None)
    out.add_link("http://e.com/3.jpg", None, None, None)
    out.add_link("http://e.com/4.jpg", " \t\n", None, None)
    out.add_link("http://e.com/5.jpg", "x" * 10_001, None, None)
    out.add_link("http://e.com/6.jpg", "bad \ufffd byte", None, None)
    out.add_link("http://e.com/" + "a" * 5000 + ".jpg", "long url", None, None)
    out.add_link("http://e.com/8.jpg", "lone \ud800 surrogate", None, None)
    assert out.urls == ["http://e.com/1.jpg"]
    assert out.rej_reasons == ["empty_alt", "empty_alt", "empty_alt", "alt_too_long", "invalid_encoding", "url_too_long", "invalid_encoding"]
    assert out.rows_in == 8
    assert len(out.links_table()) == 1 and len(out.rejected_table()) == 7


# --- HTML (WARC) ------------------------------------------------------------------------------


def test_html_parser_resolves_against_base_href_and_decodes_entities():
    html = """<html><head><base href="/static/"></head><body>
      <img src="a.jpg" alt="Tom &amp; Jerry&#39;s &quot;house&quot;">
      <IMG SRC="//cdn.example.org/b.png" ALT="upper case tags">
      <img alt="no src"><img src="c.jpg">
    </body></html>"""
    base, links = html_image_links(html, "http://example.com/dir/page.html")
    assert base == "http://example.com/static/"
    assert links == [("a.jpg", "Tom & Jerry's \"house\""), ("//cdn.example.org/b.png", "upper case tags"), ("c.jpg", None)]


def test_real_warc_pages_give_resolved_pairs():
    result = extract_file(str(shared("crawl", "iawc-link-extraction-test.warc")))
    assert result.file_error is None
    assert all(u.startswith(("http://", "https://")) for u in result.urls)
    assert result.rows_in == len(result.urls) + len(result.rej_uids)
    assert any("www.example.com" in u for u in result.urls)  # <base href="http://www.example.com/">


def test_wat_and_warc_of_the_same_crawl_agree():
    wat = extract_file(str(shared("crawl", "derived", "resiliparse-warcfile.iawc.warc.wat.gz")))
    warc = extract_file(str(shared("crawl", "resiliparse-warcfile.warc.gz")))
    assert len(wat.urls) == len(warc.urls) == 32
    assert set(zip(wat.urls, wat.texts)) == set(zip(warc.urls, warc.texts))


def test_charsets_are_decoded_before_parsing():
    result = extract_file(str(shared("crawl", "resiliparse-warcfile.warc.gz")))
    texts = " ".join(result.texts)
    assert "中国新闻网" in texts  # gb2312 page
    assert "\ufffd" not in texts


def test_wget_angle_bracket_target_uri_is_understood():
    result = extract_file(str(shared("crawl", "dolma-sample-0000.warc.gz")))
    assert len(result.urls) > 100 and all(not p.startswith("<") for p in result.page_urls)


@pytest.mark.parametrize(
    ("name", "kept", "unique"),
    [("dolma-sample-0000", 169, 56), ("dolma-sample-0001", 118, 66), ("iawc-IAH-urls-wget", 46, 14)],
)
def test_wat_of_a_wget_crawl_gives_what_its_warc_gives(name, kept, unique):
    # Common Crawl's WAT generator copies wget's "<https://...>" target URI into the WAT JSON; read
    # as is, every relative image URL of dolma's pages came out unsupported_scheme ("?: /images/...")
    # and 46 unique pairs (73 rows) of the two dolma WATs were lost.
    wat = extract_file(str(shared("crawl", "derived", f"{name}.iawc.warc.wat.gz")))
    warc = extract_file(str(shared("crawl", f"{name}.warc.gz")))
    assert (len(wat.urls), len(set(wat.uids))) == (kept, unique)
    assert set(zip(wat.uids, wat.urls, wat.texts, wat.page_urls)) == set(zip(warc.uids, warc.urls, warc.texts, warc.page_urls))
    assert Counter(wat.rej_reasons) == Counter(warc.rej_reasons)
    assert not any(p.startswith("<") for p in wat.page_urls)
    assert not any((d or "").startswith("?:") for d in wat.rej_details)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<https://example.com/a b>", "https://example.com/a b"),
        (" <http://example.com/> \r\n", "http://example.com/"),
        ("http://example.com/", "http://example.com/"),
        ("<http://example.com/", "<http://example.com/"),  # not wrapped: left as found
        ("<>", None),
        (" ", None),
        ("", None),
        (None, None),
    ],
)
def test_target_uri_unwraps_wget_angle_brackets(value, expected):
    assert target_uri(value) == expected


@pytest.mark.parametrize("reading", ["fast", "slow"])
@pytest.mark.parametrize("where", ["wat_json", "record_header"])
def test_wat_record_with_wget_target_uri_resolves_relative_links(tmp_path, monkeypatch, reading, where):
    slow_calls = []
    slow = crawl_wat._process_wat_record_slow
    monkeypatch.setattr(crawl_wat, "_process_wat_record_slow", lambda *a: slow_calls.append(1) or slow(*a))
    page = "<https://example.com/dir/page.html>"
    links = [img("/images/a.jpg"), img("b.jpg"), img("//cdn.example.org/c.jpg"), img("https://example.com/d.jpg"), img("e.jpg", alt="")]
    payload = wat_payload(links, page=page if where == "wat_json" else "")
    if reading == "slow":  # an escaped "/" sends the record to the reference (orjson) reading
        payload = payload.replace(b'"Title": "t"', b'"Title": "t\\/"')
    header_uri = page if where == "record_header" else "http://example.com/other.html"
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(payload, uri=header_uri)))
    assert result.urls == [
        "https://example.com/images/a.jpg", "https://example.com/dir/b.jpg",
        "https://cdn.example.org/c.jpg", "https://example.com/d.jpg",
    ]
    assert result.page_urls == ["https://example.com/dir/page.html"] * 4
    assert reasons(result) == Counter({"empty_alt": 1})
    assert len(slow_calls) == (reading == "slow")


# --- WAT rules on crafted records -------------------------------------------------------------


def test_wat_links_follow_cc2dataset_rules(tmp_path):
    links = [
        img("/img/a.jpg"),
        img("//cdn.example.org/b.jpg"),
        img("http://example.com/c.jpg", alt=""),
        img("http://example.com/d.jpg", alt=None),
        img("javascript:alert(1)"),
        {"path": "A@/href", "url": "http://example.com/e.jpg", "text": "not an image"},
        img("rel.jpg", alt="Tom &amp; Jerry"),  # entities left as found: filter-text unescapes
    ]
    path = write(tmp_path, "a.wat.gz", warc_member(wat_payload(links)))
    result = extract_file(path)
    assert result.urls == ["http://example.com/img/a.jpg", "http://cdn.example.org/b.jpg", "http://example.com/dir/rel.jpg"]
    assert result.texts[2] == "Tom &amp; Jerry"
    assert reasons(result) == Counter({"empty_alt": 2, "unsupported_scheme": 1})
    assert result.page_urls == ["http://example.com/dir/page.html"] * 3


def test_wat_base_href_wins_over_page_url(tmp_path):
    path = write(tmp_path, "a.wat.gz", warc_member(wat_payload([img("x.jpg")], base="http://static.example.net/s/")))
    assert extract_file(path).urls == ["http://static.example.net/s/x.jpg"]


# --- bad input --------------------------------------------------------------------------------


def test_invalid_json_record_is_rejected_and_the_rest_of_the_file_goes_on(tmp_path):
    good = warc_member(wat_payload([img("http://e.com/1.jpg")]))
    bad = warc_member(b'{"Envelope": {"Payload-Metadata": ')
    path = write(tmp_path, "a.wat.gz", good, bad, good, warc_member(wat_payload([img("http://e.com/2.jpg")])))
    result = extract_file(path)
    assert result.urls == ["http://e.com/1.jpg", "http://e.com/1.jpg", "http://e.com/2.jpg"]
    assert reasons(result) == Counter({"invalid_json": 1})


def test_json_without_envelope_is_malformed(tmp_path):
    path = write(tmp_path, "a.wat.gz", warc_member(b'{"Container": {}}'), warc_member(b"[1, 2]"))
    assert reasons(extract_file(path)) == Counter({"malformed_record": 2})


def test_non_utf8_bytes_reject_only_the_affected_link(tmp_path):
    payload = wat_payload([img("http://e.com/1.jpg", "caf\u00e9 latte art"), img("http://e.com/2.jpg", "XXBADXX")])
    payload = payload.replace(b"XXBADXX", b"bad \xff\xfe bytes")
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(payload)))
    assert result.texts == ["caf\u00e9 latte art"]
    assert reasons(result) == Counter({"invalid_encoding": 1})


def test_megabyte_alt_is_rejected_not_kept(tmp_path):
    payload = wat_payload([img("http://e.com/1.jpg", "spam " * 250_000), img("http://e.com/2.jpg", "a red bike")])
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(payload)))
    assert result.texts == ["a red bike"]
    assert reasons(result) == Counter({"alt_too_long": 1})
    assert len(result.rej_details[0]) < 400  # details are clipped


def test_thousands_of_links_on_one_page(tmp_path):
    links = [img(f"http://e.com/{i}.jpg", f"photo number {i}") for i in range(5000)]
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(wat_payload(links))))
    assert len(result.urls) == 5000 and len(set(result.uids)) == 5000


def test_corrupt_gzip_member_mid_file_is_skipped_and_later_records_survive(tmp_path):
    src = shared("crawl", "derived", "aut-example.iawc.warc.wat.gz").read_bytes()
    clean = extract_file(str(shared("crawl", "derived", "aut-example.iawc.warc.wat.gz")))
    data = bytearray(src)
    mid = len(data) // 2
    data[mid : mid + 200] = bytes(range(200))
    result = extract_file(write(tmp_path, "corrupt.wat.gz", bytes(data)))
    assert reasons(result)["corrupt_file"] >= 1
    assert result.file_error and "corrupt_file" in result.file_error
    assert len(clean.urls) - 5 <= len(result.urls) < len(clean.urls)  # only the broken member's pairs lost


def test_gzip_cut_mid_stream_gives_truncated_record(tmp_path):
    src = shared("crawl", "derived", "aut-example.iawc.warc.wat.gz").read_bytes()
    result = extract_file(write(tmp_path, "cut.wat.gz", src[: len(src) // 2]))
    assert reasons(result)["truncated_record"] == 1 and len(result.urls) > 300


def test_wrong_content_length_gives_a_reason():
    for name in ("CC-MAIN-sample.warc.wat.gz", "CC-MAIN-sample3.warc.wat.gz"):
        result = extract_file(str(shared("crawl", "hostile", name)))
        assert result.rej_reasons and set(result.rej_reasons) <= {"invalid_json", "truncated_record"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("derived-truncated-resiliparse-warcfile.warc.gz", "truncated_record"),
        ("resiliparse-clipped.warc.gz", "truncated_record"),
        ("whirlwind.warc.wet.gz", "no_crawl_records"),
        ("toimik/WarcParserStreamer__example.wat", "no_crawl_records"),
        ("toimik/WarcParserStreamer__warcinfo.warc", "no_crawl_records"),
        ("toimik/WarcParserWatUrlExtractor__Invalid__invalid.warc", "invalid_json"),
    ],
)
def test_hostile_shared_files_give_their_reason(name, reason):
    result = extract_file(str(shared("crawl", "hostile", name)))
    assert reason in result.rej_reasons
    assert result.rows_in == len(result.urls) + len(result.rej_uids)


def test_hostile_files_with_good_records_still_yield_them():
    wat = extract_file(str(shared("crawl", "hostile", "derived-whirlwind-iawc-plus-record-without-Container.warc.wat.gz")))
    assert len(wat.urls) == 7
    lz4 = extract_file(str(shared("crawl", "hostile", "resiliparse-warcfile.warc.lz4")))
    assert len(lz4.urls) == 32
    truncated = extract_file(str(shared("crawl", "hostile", "derived-truncated-resiliparse-warcfile.warc.gz")))
    assert len(truncated.urls) > 0


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", os.urandom(4096), gzip.compress(b"hello world")])
def test_empty_bom_or_garbage_files_are_one_clear_rejection(tmp_path, content):
    result = extract_file(write(tmp_path, "x.warc.gz", content))
    assert result.rej_reasons == ["no_crawl_records"] and result.file_error


def test_missing_file_is_unreadable_not_a_crash(tmp_path):
    result = extract_file(str(tmp_path / "gone.warc.wat.gz"))
    assert result.rej_reasons == ["unreadable_file"] and "gone.warc.wat.gz" in result.rej_details[0]


def test_duplicates_collapse_to_the_first_seen_copy():
    a, b = FileExtraction("a.wat.gz"), FileExtraction("b.wat.gz")
    for out in (b, a):
        out.add_link("http://e.com/1.jpg", "same caption", None, None)
    a.add_link("http://e.com/1.jpg", "same caption", None, None)
    import pyarrow as pa

    kept, rejected = collapse_duplicates(pa.concat_tables([b.links_table(), a.links_table()]))
    assert kept.column("source_file").to_pylist() == ["a.wat.gz"]
    assert rejected.column("reason").to_pylist() == ["duplicate_uid"] * 2
    assert all(d.startswith("kept a.wat.gz#1") for d in rejected.column("detail").to_pylist())


@pytest.mark.parametrize(
    "envelope_patch",
    [
        {"WARC-Header-Metadata": ["not", "an", "object"]},
        {"WARC-Header-Metadata": {"WARC-Target-URI": 42}},
        {"WARC-Header-Metadata": {"WARC-Target-URI": None}},
    ],
)
def test_odd_typed_envelope_fields_fall_back_to_the_record_header(tmp_path, envelope_patch):
    doc = json.loads(wat_payload([img("rel.jpg")]))
    doc["Envelope"].update(envelope_patch)
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(json.dumps(doc).encode(), uri="http://hdr.example.com/p/q.html")))
    assert result.urls == ["http://hdr.example.com/p/rel.jpg"]


def test_non_string_base_href_is_ignored(tmp_path):
    doc = json.loads(wat_payload([img("rel.jpg")]))
    doc["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]["Head"]["Base"] = {"x": 1}
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(json.dumps(doc).encode())))
    assert result.urls == ["http://example.com/dir/rel.jpg"]


# --- bad WARC headers -------------------------------------------------------------------------


def response_member(alt: str, content_length: str | None = "exact", extra: int = 0) -> bytes:
    """A gzip member holding one HTML response record whose Content-Length is exact, given, absent
    (None) or ``extra`` bytes longer than the block."""
    html = f'<html><body><img src="http://192.0.2.1/{hashlib.md5(alt.encode()).hexdigest()}.jpg" alt="{alt}"></body></html>'
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + html.encode()
    length = {"exact": str(len(block) + extra), None: None}.get(content_length, content_length)
    head = (
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://example.com/p.html\r\n"
        f"WARC-Record-ID: <urn:uuid:{hashlib.md5(alt.encode()).hexdigest()}>\r\n"
        "Content-Type: application/http; msgtype=response\r\n" + (f"Content-Length: {length}\r\n" if length else "") + "\r\n"
    )
    return gzip.compress(head.encode() + block + b"\r\n\r\n", mtime=0)


@pytest.mark.parametrize("length", ["abc", "-5", "", None, "\u00b2", "1\u0663"])
def test_a_record_whose_content_length_is_no_byte_count_is_malformed(tmp_path, length):
    path = write(tmp_path, "a.warc.gz", response_member("a red bicycle"), response_member("a bad record", length),
                 response_member("a blue car"))
    result = extract_file(path)
    assert result.texts == ["a red bicycle", "a blue car"]
    assert reasons(result) == Counter({"malformed_record": 1})
    assert "is not a byte count" in result.rej_details[0] and hashlib.md5(b"a bad record").hexdigest() in result.rej_details[0]


def test_a_content_length_running_into_the_next_record_is_reported_and_the_next_record_kept(tmp_path):
    path = write(tmp_path, "a.warc.gz", response_member("a red bicycle"), response_member("a greedy record", extra=60),
                 response_member("a blue car"), response_member("a green boat"))
    result = extract_file(path)
    assert result.texts == ["a red bicycle", "a blue car", "a green boat"]  # resynchronised at the next member
    assert reasons(result) == Counter({"corrupt_file": 1})
    assert "runs into the next record" in result.rej_details[0] and result.file_error


def test_lone_surrogate_escape_rejects_only_its_link(tmp_path):
    payload = wat_payload([img("http://e.com/1.jpg", "a red bicycle"), img("http://e.com/2.jpg", "XXBADXX")])
    payload = payload.replace(b"XXBADXX", b"lone \\ud800 surrogate")  # valid JSON syntax, no valid string
    result = extract_file(write(tmp_path, "a.wat.gz", warc_member(payload)))
    assert result.texts == ["a red bicycle"]
    assert reasons(result) == Counter({"invalid_encoding": 1})


def test_lone_surrogate_in_an_image_url_or_the_page_url_is_a_reason_and_tables_stay_writable(tmp_path):
    payload = wat_payload([img("http://e.com/1.jpg", "a red bicycle"), img("http://e.com/XXBADXX.jpg", "a blue bicycle")])
    in_src = extract_file(write(tmp_path, "a.wat.gz", warc_member(payload.replace(b"XXBADXX", b"\\udc80"))))
    assert in_src.texts == ["a red bicycle"] and reasons(in_src) == Counter({"invalid_encoding": 1})
    page = wat_payload([img("http://e.com/1.jpg", "a red bicycle")], page="http://e.com/XXBADXX.html")
    in_page = extract_file(write(tmp_path, "b.wat.gz", warc_member(page.replace(b"XXBADXX", b"\\ud800"))))
    assert in_page.texts == [] and reasons(in_page) == Counter({"invalid_encoding": 1})
    for result in (in_src, in_page):  # both tables can be written as parquet (UTF-8)
        pq.write_table(result.links_table(), tmp_path / "links.parquet")
        pq.write_table(result.rejected_table(), tmp_path / "rejected.parquet")
        assert "\\ud" in pq.read_table(tmp_path / "rejected.parquet").column("detail")[0].as_py()


def test_a_page_that_quotes_a_warc_version_line_is_not_an_overrun(tmp_path):
    quoted = "a record starts with\r\n\r\nWARC/1.0\r\nthen its header fields"
    path = write(tmp_path, "a.warc.gz", response_member("a red bicycle"), response_member(quoted), response_member("a blue car"))
    result = extract_file(path)
    assert len(result.texts) == 3 and result.texts[0] == "a red bicycle" and result.texts[2] == "a blue car"
    assert reasons(result) == Counter() and result.file_error is None
