"""Common Crawl parsing: (image url, alt text) pairs from WAT and WARC files. Pure Python, no Spark.

Rules follow cc2dataset so that uids agree with it:

* WAT: every ``Links`` entry with ``path == "IMG@/src"`` of a metadata record's
  ``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata``;
  WARC: every ``<img src>`` of a ``text/html`` response, parsed with a real HTML parser (lexbor,
  through resiliparse) after charset detection.
* the alt must be non-empty (whitespace-only counts as empty);
* relative and protocol-relative URLs are resolved against ``<base href>`` (itself resolved against
  the page URL) or the page URL; only http and https URLs are kept;
* ``uid = md5(alt + url)`` hex, on the alt as found and the absolute URL.

Every image link becomes a kept pair or a rejected row with a :class:`Reason`; every record that
cannot be read becomes a rejected row; a file that breaks mid-stream gives a ``corrupt_file`` row
and keeps the pairs read before the break. Nothing is dropped silently.

A WAT record is read by a simdjson fast path that gives exactly what the orjson reading gives and
hands it every record it cannot be sure of (``curation.crawl.wat``); ``bench/extract.py`` measures it.
The link rules and the per-file accumulator are ``curation.crawl.links``; this module reads the files
(gzip members, record iteration, resynchronisation after a bad record) and the WARC HTML responses.
"""

from __future__ import annotations

import logging
import re
import zlib
from urllib.parse import urljoin

import pyarrow as pa
from fastwarc.warc import ArchiveIterator, WarcHeader, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

from curation import storage
from curation.storage import StorageOptions
from curation.crawl.links import (
    CONTENT_TYPE,
    WHITESPACE,
    STAGE,
    ExtractRules,
    FileExtraction,
    record_key,
    record_target_uri,
)
from curation.crawl.wat import process_wat_record
from curation.stage import rejected_table
from schemas import DETAIL, REASON, REJECTED, UID, Reason

log = logging.getLogger(__name__)

# --- WARC (HTML) ------------------------------------------------------------------------------


def html_image_links(html: str, page_url: str | None) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Parse HTML; return (base url for resolution, [(src, alt or None)]) in document order."""
    tree = HTMLTree.parse(html)
    base = page_url
    doc = tree.document
    if doc is None:
        return base, []
    base_el = doc.query_selector("base[href]")
    if base_el is not None:
        href = (base_el.getattr("href") or "").strip(WHITESPACE)
        if href:
            try:
                base = urljoin(page_url or "", href)
            except ValueError:
                pass
    return base, [(img.getattr("src") or "", img.getattr("alt")) for img in doc.query_selector_all("img[src]")]


def _is_html(content_type: str | None, data: bytes) -> bool:
    if content_type:
        ct = content_type.lower()
        return "html" in ct
    head = data[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _process_warc_response(out: FileExtraction, key: str, record, data: bytes, page_url: str | None) -> None:
    if not _is_html(record.http_content_type, data):
        return
    if len(data) > out.rules.max_html_bytes:
        data = data[: out.rules.max_html_bytes]
    encoding = record.http_charset or detect_encoding(data) or "utf-8"
    html = bytes_to_str(data, encoding, errors="replace")
    try:
        base, links = html_image_links(html, page_url)
    except Exception as e:  # noqa: BLE001 - the parser's error types are not documented; record it
        out.reject_record(key, Reason.UNPARSABLE_HTML, f"{type(e).__name__}: {e}")
        return
    for src, alt in links:
        out.add_link(src, alt, base, page_url)


# --- files ------------------------------------------------------------------------------------


_GZIP_MAGIC = b"\x1f\x8b\x08"
_RESYNC_CHUNK = 1 << 20
_CONTENT_LENGTH = WarcHeader.CONTENT_LENGTH
# a record's end followed by the next record's version line: a block holding this ran past its own end
_NEXT_RECORD = (b"\r\n\r\nWARC/1.0\r\n", b"\r\n\r\nWARC/1.1\r\n")
_MAX_HEADER_BYTES = 16384
_DIGITS = re.compile(r"[0-9]+")
_HEADER_LINE = re.compile(rb"[A-Za-z0-9-]+:")


class RecordOverrunError(ValueError):
    """A record's Content-Length runs into the next record (which it would swallow)."""


def _bad_content_length(record) -> str | None:
    """Why the record's Content-Length header is not a byte count (missing, not ASCII digits, negative)."""
    value = record.headers.get(_CONTENT_LENGTH)
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return f"Content-Length {value!r} is not a byte count"
    return None


def _runs_into_next_record(data: bytes) -> bool:
    """Whether a block holds a record end followed by a WARC header: the version line, then only
    header-shaped lines (at least one WARC-* field) up to a blank line or the block's end, i.e. the
    next record, swallowed by a too-long Content-Length. (A page that merely mentions "WARC/1.0"
    does not count; one quoting a whole WARC header with CRLF line ends would.)"""
    for marker in _NEXT_RECORD:
        at = data.find(marker)
        while at != -1:
            head = data[at + len(marker) : at + len(marker) + _MAX_HEADER_BYTES]
            blank = head.find(b"\r\n\r\n")
            lines = (head if blank == -1 else head[:blank]).split(b"\r\n")
            if blank == -1:  # the block (or the window) ends inside the header: its last line may be cut
                lines = lines[:-1]
            if any(ln[:5].lower() == b"warc-" for ln in lines) and all(_HEADER_LINE.match(ln) for ln in lines):
                return True
            at = data.find(marker, at + 1)
    return False


def _next_gzip_member(stream, start: int) -> int | None:
    """Offset of the next gzip member at or after ``start`` that decompresses to a WARC header."""
    pos = start
    while True:
        stream.seek(pos)
        chunk = stream.read(_RESYNC_CHUNK + len(_GZIP_MAGIC))
        if len(chunk) < len(_GZIP_MAGIC):
            return None
        i = chunk.find(_GZIP_MAGIC)
        while i != -1:
            try:
                head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(chunk[i : i + 4096], 16)
            except zlib.error:
                head = b""
            if head.startswith(b"WARC/"):
                return pos + i
            i = chunk.find(_GZIP_MAGIC, i + 1)
        if len(chunk) <= _RESYNC_CHUNK:
            return None
        pos += _RESYNC_CHUNK


def extract_stream(stream, source_file: str, rules: ExtractRules | None = None) -> FileExtraction:
    """Extract pairs from an open WAT/WARC stream (gzip, lz4, zstd or plain; detected by content).

    A gzip stream that breaks (corrupt member) is resynchronised at the next member holding a WARC
    record: the bytes skipped are reported as one ``corrupt_file`` row and the rest of the file goes on.
    """
    out = FileExtraction(source_file=source_file, rules=rules or ExtractRules())
    seekable = hasattr(stream, "seek")
    is_gzip = False
    if seekable:
        is_gzip = stream.read(3) == _GZIP_MAGIC
        stream.seek(0)
    offset = 0
    while True:
        last_pos = _iterate_records(out, stream)
        if last_pos is None:
            break  # clean end of stream
        error, last_start = last_pos
        resume = _next_gzip_member(stream, max(last_start, offset) + 1) if is_gzip else None
        if resume is None:
            out.reject_record(f"offset={last_start}", Reason.CORRUPT_FILE, f"{error}; nothing readable after it")
            break
        out.reject_record(f"offset={last_start}", Reason.CORRUPT_FILE, f"{error}; skipped to byte {resume}")
        offset = resume
        stream.seek(resume)
    if not out.records.get("wat_json") and not out.records.get("http_response"):
        if not any(r == Reason.CORRUPT_FILE.value for r in out.rej_reasons):
            seen = ", ".join(f"{k}={v}" for k, v in sorted(out.records.items())) or "no records"
            out.fail_file(Reason.NO_CRAWL_RECORDS, f"no WAT metadata or WARC response records ({seen})")
    if any(r == Reason.CORRUPT_FILE.value for r in out.rej_reasons):
        out.file_error = "corrupt_file: " + "; ".join(
            d for d, r in zip(out.rej_details, out.rej_reasons) if r == Reason.CORRUPT_FILE.value
        )
    return out


def _iterate_records(out: FileExtraction, stream) -> tuple[str, int] | None:
    """Process records until the stream ends (None) or breaks ((error, start of the last record))."""
    last_start = stream.tell() if hasattr(stream, "tell") else 0
    try:
        for record in ArchiveIterator(stream, parse_http=True, quirks_mode=True, strict_mode=False):
            last_start = record.stream_pos
            rtype = record.record_type
            name = str(rtype)
            out.records[name] = out.records.get(name, 0) + 1
            kind = None
            if rtype == WarcRecordType.metadata and "json" in (record.headers.get(CONTENT_TYPE) or ""):
                kind = "wat_json"  # (WARC metadata records are warc-fields, not WAT JSON)
            elif rtype == WarcRecordType.response:
                kind = "http_response"
            if kind:
                out.records[kind] = out.records.get(kind, 0) + 1
            # every payload is read: a file cut mid-record must say so whatever the record type
            data = record.reader.read()
            bad_length = _bad_content_length(record)
            if bad_length:  # the reader took no block: the record is lost, say so
                out.reject_record(record_key(record), Reason.MALFORMED_RECORD, f"{name} record: {bad_length}")
                continue
            if _runs_into_next_record(data):  # gzip: resynchronised at the next member
                raise RecordOverrunError(f"{name} record {record_key(record)}: Content-Length runs into the next record")
            if len(data) < record.content_length:
                out.reject_record(record_key(record), Reason.TRUNCATED_RECORD, f"{name} record: {len(data)} of {record.content_length} bytes")
                continue
            if kind == "wat_json":
                process_wat_record(out, record, data)
            elif kind == "http_response":
                _process_warc_response(out, record_key(record), record, data, record_target_uri(record))
    except (OSError, ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}", last_start
    return None


def extract_file(uri: str, options: StorageOptions | None = None, rules: ExtractRules | None = None) -> FileExtraction:
    """Extract one crawl file (local path or s3:// URI). Never raises for bad content."""
    try:
        stream = storage.open_input(uri, options)
    except (OSError, storage.StorageError) as e:
        out = FileExtraction(source_file=uri, rules=rules or ExtractRules())
        out.fail_file(Reason.UNREADABLE_FILE, f"{type(e).__name__}: {e}")
        return out
    with stream:
        return extract_stream(stream, uri, rules)


def collapse_duplicates(links: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Keep one row per uid: the lowest (source_file, link_seq). Others are rejected duplicate_uid
    with the kept copy's location in the detail. Output sorted by uid (deterministic)."""
    if links.num_rows == 0:
        return links.drop_columns(["link_seq"]), REJECTED.empty()
    ordered = links.sort_by([(UID, "ascending"), ("source_file", "ascending"), ("link_seq", "ascending")])
    uids = ordered.column(UID).to_pylist()
    first = [True] + [uids[i] != uids[i - 1] for i in range(1, len(uids))]
    mask = pa.array(first)
    kept = ordered.filter(mask)
    dups = ordered.filter(pa.compute.invert(mask))
    if dups.num_rows:
        where = {u: f"{s}#{q}" for u, s, q in zip(*(kept.column(c).to_pylist() for c in (UID, "source_file", "link_seq")))}
        dup_uids = dups.column(UID).to_pylist()
        rejected = rejected_table(
            {
                UID: dup_uids,
                REASON: [Reason.DUPLICATE_UID] * len(dup_uids),
                DETAIL: [f"kept {where[u]}; dropped {s}#{q}" for u, s, q in zip(dup_uids, dups.column("source_file").to_pylist(), dups.column("link_seq").to_pylist())],
            },
            STAGE,
        )
    else:
        rejected = REJECTED.empty()
    return kept.drop_columns(["link_seq"]), rejected


def bucket_of(uid: str, n_buckets: int) -> int:
    """Output shard of a uid: deterministic across engines and partitionings."""
    return int(uid[:8], 16) % n_buckets
