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
hands it every record it cannot be sure of (see "Fast path" below); ``bench/extract.py`` measures it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import zlib
from dataclasses import dataclass, field
from urllib.parse import urljoin

import orjson
import pyarrow as pa
import simdjson
from fastwarc.warc import ArchiveIterator, WarcHeader, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

from curation import storage
from curation.storage import StorageOptions
from schemas import EXTRACTED_LINKS, REJECTED, Reason

log = logging.getLogger(__name__)

STAGE = "extract"
_ALLOWED_PREFIXES = ("http://", "https://")
_WHITESPACE = " \t\n\r\f\v"
_REPLACEMENT = "\ufffd"  # what undecodable bytes become


@dataclass(frozen=True)
class ExtractRules:
    """Safety bounds of the extraction stage (content rules belong to filter-text)."""

    max_alt_chars: int = 10_000  # an alt beyond this is junk or an attack; rejected alt_too_long
    max_url_chars: int = 4_096
    max_html_bytes: int = 8 * 1024 * 1024  # larger WARC payloads are parsed up to this many bytes
    detail_chars: int = 300  # rejected detail strings are clipped to this


def make_uid(text: str, url: str) -> str:
    """cc2dataset's uid: md5 hex of alt text followed by the absolute url."""
    return hashlib.md5((text + url).encode("utf-8")).hexdigest()


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + f"...(+{len(s) - n} chars)"


def _encodable(s: str | None) -> bool:
    """Whether ``s`` can be written as UTF-8 (no lone surrogate from a JSON \\ud800 escape)."""
    try:
        if s is not None:
            s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(s: str) -> str:
    """``s`` with lone surrogates written as \\udXXX escapes: a detail that parquet can store."""
    return s if _encodable(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def resolve_url(raw: str, base: str | None) -> tuple[str | None, Reason | None, str | None]:
    """Resolve an image link against the page/base URL; return (url, None, None) or (None, reason, detail)."""
    url = raw.strip(_WHITESPACE)
    if not url:
        return None, Reason.INVALID_URL, "empty src"
    if not url.startswith(_ALLOWED_PREFIXES):
        if not base:
            return None, Reason.INVALID_URL, f"relative url without a page url: {url}"
        try:
            url = urljoin(base, url)
        except ValueError as e:
            return None, Reason.INVALID_URL, f"{e}: {url}"
        if not url.startswith(_ALLOWED_PREFIXES):
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme in ("http", "https"):  # e.g. "HTTP://..." kept by us, lower-cased scheme
                url = scheme + url[len(scheme) :]
            else:
                return None, Reason.UNSUPPORTED_SCHEME, f"{scheme or '?'}: {url}"
    host_start = url.index("//") + 2
    if host_start >= len(url) or url[host_start] in "/?#":
        return None, Reason.INVALID_URL, f"no host: {url}"
    return url, None, None


@dataclass
class FileExtraction:
    """Accumulates one crawl file's pairs and rejected rows in column lists (cheap to append)."""

    source_file: str
    rules: ExtractRules = field(default_factory=ExtractRules)
    uids: list = field(default_factory=list)
    urls: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    page_urls: list = field(default_factory=list)
    seqs: list = field(default_factory=list)
    rej_uids: list = field(default_factory=list)
    rej_reasons: list = field(default_factory=list)
    rej_details: list = field(default_factory=list)
    records: dict = field(default_factory=dict)  # record type -> count
    file_error: str | None = None
    _seq: int = 0

    @property
    def rows_in(self) -> int:
        return len(self.uids) + len(self.rej_uids)

    def reject(self, uid: str, reason: Reason, detail: str | None) -> None:
        self.rej_uids.append(uid)
        self.rej_reasons.append(reason.value)
        self.rej_details.append(None if detail is None else _printable(_clip(detail, self.rules.detail_chars)))

    def reject_record(self, key: str, reason: Reason, detail: str) -> None:
        uid = hashlib.md5(f"{self.source_file}#{key}".encode("utf-8", "replace")).hexdigest()
        self.reject(uid, reason, f"{self.source_file}#{key}: {detail}")

    def fail_file(self, reason: Reason, detail: str) -> None:
        self.file_error = f"{reason.value}: {detail}"
        self.reject_record("file", reason, detail)

    def add_link(self, raw_url: str, alt: str | None, base: str | None, page_url: str | None) -> None:
        """One image link -> one kept pair or one rejected row."""
        self.add_resolved_link(raw_url, alt, resolve_url(raw_url, base), page_url)

    def add_resolved_link(
        self, raw_url: str, alt: str | None, resolved: tuple[str | None, Reason | None, str | None], page_url: str | None
    ) -> None:
        """:meth:`add_link` with ``resolved = resolve_url(raw_url, base)`` already computed."""
        self._seq += 1
        alt = alt or ""
        url, reason, detail = resolved
        if url is None:
            self.reject(_safe_uid(alt, raw_url), reason, detail)
            return
        try:
            uid = make_uid(alt, url)
        except UnicodeEncodeError as e:  # lone surrogates from a JSON \\ud800 escape
            self.reject(_safe_uid(alt, url), Reason.INVALID_ENCODING, f"{e.reason}: {url}")
            return
        if not alt.strip(_WHITESPACE):
            self.reject(uid, Reason.EMPTY_ALT, None)
        elif _REPLACEMENT in alt or _REPLACEMENT in url:
            where = "alt" if _REPLACEMENT in alt else "url"
            self.reject(uid, Reason.INVALID_ENCODING, f"undecodable bytes in {where}")
        elif len(alt) > self.rules.max_alt_chars:
            self.reject(uid, Reason.ALT_TOO_LONG, f"{len(alt)} chars: {url}")
        elif len(url) > self.rules.max_url_chars:
            self.reject(uid, Reason.URL_TOO_LONG, f"{len(url)} chars")
        else:
            self.uids.append(uid)
            self.urls.append(url)
            self.texts.append(alt)
            self.page_urls.append(page_url)
            self.seqs.append(self._seq)

    def links_table(self) -> pa.Table:
        n = len(self.uids)
        return pa.table(
            {
                "uid": self.uids,
                "url": self.urls,
                "text": self.texts,
                "page_url": self.page_urls,
                "source_file": [self.source_file] * n,
                "link_seq": self.seqs,
            },
            schema=EXTRACTED_LINKS.arrow_schema(),
        )

    def rejected_table(self) -> pa.Table:
        return pa.table(
            {
                "uid": self.rej_uids,
                "stage": [STAGE] * len(self.rej_uids),
                "reason": self.rej_reasons,
                "detail": self.rej_details,
            },
            schema=REJECTED.arrow_schema(),
        )


def _safe_uid(alt: str, url: str) -> str:
    return hashlib.md5((alt + url).encode("utf-8", "surrogatepass")).hexdigest()


# --- WAT --------------------------------------------------------------------------------------


def _parse_wat_json(data: bytes) -> tuple[dict | None, bool]:
    """Return (document, had_invalid_utf8). Invalid UTF-8 is decoded with replacement characters so
    the good links of the record survive; links carrying U+FFFD are then rejected invalid_encoding.
    A lone surrogate escape ("\\ud800"), which orjson refuses, is read by the standard library's
    parser, so only the links that carry it are rejected (invalid_encoding), not the whole record."""
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
        bad = False
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = True
    try:
        return orjson.loads(text.encode("utf-8", "surrogatepass")), bad
    except (orjson.JSONDecodeError, UnicodeEncodeError):
        pass
    try:
        return json.loads(text), bad
    except (ValueError, RecursionError):
        return None, bad


def _process_wat_record(out: FileExtraction, record, data: bytes) -> None:
    if not _process_wat_record_fast(out, data, record):
        _process_wat_record_slow(out, _record_key(record), data, _target_uri(record))


def _process_wat_record_slow(out: FileExtraction, key: str, data: bytes, header_uri: str | None) -> None:
    """The reference reading of a WAT record: the whole document through orjson."""
    doc, bad_utf8 = _parse_wat_json(data)
    if doc is None:
        head = data[:80].decode("utf-8", "replace")
        out.reject_record(key, Reason.INVALID_JSON, f"{'invalid UTF-8 and ' if bad_utf8 else ''}not JSON: {head!r}")
        return
    envelope = doc.get("Envelope") if isinstance(doc, dict) else None
    if not isinstance(envelope, dict):
        out.reject_record(key, Reason.MALFORMED_RECORD, "WAT JSON without an Envelope object")
        return
    try:
        meta = envelope["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
        links = meta["Links"]
    except (KeyError, TypeError):
        return  # a request/non-HTML record: it holds no links, so no rows
    if not isinstance(links, list):
        out.reject_record(key, Reason.MALFORMED_RECORD, "Links is not a list")
        return
    warc_meta = envelope.get("WARC-Header-Metadata")
    page_url = warc_meta.get("WARC-Target-URI") if isinstance(warc_meta, dict) else None
    page_url = target_uri(page_url) if isinstance(page_url, str) else None
    if not page_url:
        page_url = header_uri  # absent, empty or not a string: the record header's URI
    base = page_url
    page_ok = _encodable(page_url)  # only this slow path reads \\ud800 escapes (the standard library's parser)
    head = meta.get("Head")
    href = head.get("Base") if isinstance(head, dict) else None
    if isinstance(href, str) and href:
        try:
            base = urljoin(page_url or "", href)
        except ValueError:
            pass
    for link in links:
        if isinstance(link, dict) and link.get("path") == "IMG@/src":
            url = link.get("url")
            alt = link.get("alt")
            url, alt = (url if isinstance(url, str) else ""), (alt if isinstance(alt, str) else "")
            if not page_ok:  # the link itself may be fine, but its row could not be written
                out.reject(_safe_uid(alt, url), Reason.INVALID_ENCODING, f"lone surrogate in the page URL {page_url!r}")
                continue
            out.add_link(url, alt, base, page_url)


# Fast path. simdjson validates a record and indexes it without building Python objects; only the
# objects on the way to ``Links`` and the Links entries themselves are looked at, and the entries
# only in a record that holds the text "IMG@/src" at all, up to its last image entry (most entries
# are not images: building them all as orjson does is most of the slow path's cost, with the
# Python loop over them). Where the fast path cannot be sure to read a record exactly as the slow
# path does, it leaves the record to the slow path:
# * JSON that simdjson rejects (orjson reads a few documents simdjson does not, e.g. integers beyond
#   64 bits, and the slow path decides invalid_json with its UTF-8 repair), and a UTF-8 BOM (which
#   simdjson skips and orjson rejects);
# * duplicate keys (simdjson's lookups take the first, orjson's dict the last): the objects on the
#   way and the image entries are checked; an entry whose *last* "path" is "IMG@/src" behind an
#   earlier other "path" would be missed, so the number of "IMG@/src" strings in the record bytes
#   must equal the number of image entries found (every image entry holds at least one);
# * an escape ("\/", "\u0049", ...) that could spell a character of "IMG@/src" (the byte search
#   would miss it);
# * any unusual type on the way (malformed records, a non-string page or base URL, and the like).

_IMG_PATH = "IMG@/src"
_IMG_TOKEN = b'"IMG@/src"'
_IMG_ESCAPES = frozenset((b"u0049", b"u004d", b"u0047", b"u0040", b"u002f", b"u0073", b"u0072", b"u0063"))
_BOM = b"\xef\xbb\xbf"
_META_PATH = ("Payload-Metadata", "HTTP-Response-Metadata", "HTML-Metadata")
_OBJECT = simdjson.Object
_ARRAY = simdjson.Array
_local = threading.local()


def _may_escape_img_char(data: bytes) -> bool:
    """Whether JSON text ``data`` has an escape that could stand for a character of "IMG@/src"."""
    i = data.find(b"\\")
    while i >= 0:
        c = data[i + 1 : i + 2]
        if c == b"/" or (c == b"u" and data[i + 1 : i + 6].lower() in _IMG_ESCAPES):
            return True
        i = data.find(b"\\", i + 2)  # past the escaped character ("\\" is one escape)
    return False


def _simdjson_parse(data: bytes):
    """simdjson's view of ``data``, or None where simdjson does not take it."""
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        return parser.parse(data)
    except RuntimeError:  # big integer, depth, or a proxy of an earlier document still alive
        _local.parser = parser = simdjson.Parser()
        try:
            return parser.parse(data)
        except Exception:  # noqa: BLE001 - any simdjson error: the slow path decides
            return None
    except Exception:  # noqa: BLE001
        return None


def _image_entries(links, n: int) -> list:
    """The first ``n`` entries of ``links`` (a simdjson Array) whose first "path" is "IMG@/src"."""
    found = []
    try:
        for link in links:
            if link["path"] == _IMG_PATH:
                found.append(link)
                if len(found) == n:
                    break
        return found
    except (KeyError, TypeError, ValueError, IndexError):  # an entry that is no object or has no "path"
        pass
    found = []
    for link in links:
        if type(link) is _OBJECT and link.get("path") == _IMG_PATH:
            found.append(link)
            if len(found) == n:
                break
    return found


def _process_wat_record_fast(out: FileExtraction, data: bytes, record) -> bool:
    """Handle a WAT record exactly as the slow path would; False: leave it to the slow path."""
    if data[:3] == _BOM:
        return False
    doc = _simdjson_parse(data)
    if doc is None:
        return False
    obj = _OBJECT
    # (len(o) counts duplicate keys, set(o) does not)
    if type(doc) is not obj or len(doc) != len(set(doc)):
        return False
    envelope = doc.get("Envelope")
    if type(envelope) is not obj or len(envelope) != len(set(envelope)):
        return False
    meta = envelope
    for name in _META_PATH:
        meta = meta.get(name)
        if type(meta) is not obj:
            return True  # missing or not an object: no links, no rows (as the slow path)
        if len(meta) != len(set(meta)):
            return False
    links = meta.get("Links")
    if type(links) is not _ARRAY:
        return links is None and "Links" not in meta  # missing: no rows; anything else: slow path
    warc_meta = envelope.get("WARC-Header-Metadata")
    if warc_meta and type(warc_meta) is not obj:
        return False  # odd envelope: the slow path reads it
    if not len(links):
        return True
    if _may_escape_img_char(data):
        return False
    first = data.find(_IMG_TOKEN)
    if first < 0:
        return True  # no string "IMG@/src" anywhere: no image link
    if warc_meta and len(warc_meta) != len(set(warc_meta)):
        return False
    page_url = warc_meta.get("WARC-Target-URI") if warc_meta else None
    if page_url and type(page_url) is not str:
        return False
    page_url = target_uri(page_url) or _target_uri(record)
    base = page_url
    head = meta.get("Head")
    if type(head) is obj:
        if len(head) != len(set(head)):
            return False
        href = head.get("Base")
        if href:
            if type(href) is not str:
                return False
            try:
                base = urljoin(page_url or "", href)
            except ValueError:
                pass
    # Every image entry holds at least one of the record's n "IMG@/src" strings, so once n entries
    # whose (first) "path" is "IMG@/src" are found, no other entry can be one: stop there. Fewer than
    # n: some string is elsewhere (an entry hiding its image "path" behind a duplicate key, another
    # field): slow path.
    n = data.count(_IMG_TOKEN, first)
    found = _image_entries(links, n)
    if len(found) != n:
        return False
    for link in found:
        if len(link) != len(set(link)):
            return False
    add = out.add_resolved_link
    resolved = {}  # a page often shows one image many times: resolve its URL once
    for link in found:
        url = link.get("url")
        alt = link.get("alt")
        if type(url) is not str:
            url = ""
        r = resolved.get(url)
        if r is None:
            r = resolved[url] = resolve_url(url, base)
        add(url, alt if type(alt) is str else "", r, page_url)
    return True


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
        href = (base_el.getattr("href") or "").strip(_WHITESPACE)
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


_CONTENT_TYPE = WarcHeader.CONTENT_TYPE
_TARGET_URI = WarcHeader.WARC_TARGET_URI


def _record_key(record) -> str:
    return record.record_id or f"offset={record.stream_pos}"


def target_uri(value: str | None) -> str | None:
    """A ``WARC-Target-URI`` as a URL, from a record header or a WAT's ``WARC-Header-Metadata``:
    surrounding whitespace dropped and wget's angle brackets (``<https://...>``, WARC/1.0's grammar)
    unwrapped; None when nothing is left. The WARC and both WAT readings share it."""
    if not value:
        return None
    uri = value.strip(_WHITESPACE)
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip(_WHITESPACE)
    return uri or None


def _target_uri(record) -> str | None:
    return target_uri(record.headers.get(_TARGET_URI))


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
            if rtype == WarcRecordType.metadata and "json" in (record.headers.get(_CONTENT_TYPE) or ""):
                kind = "wat_json"  # (WARC metadata records are warc-fields, not WAT JSON)
            elif rtype == WarcRecordType.response:
                kind = "http_response"
            if kind:
                out.records[kind] = out.records.get(kind, 0) + 1
            # every payload is read: a file cut mid-record must say so whatever the record type
            data = record.reader.read()
            bad_length = _bad_content_length(record)
            if bad_length:  # the reader took no block: the record is lost, say so
                out.reject_record(_record_key(record), Reason.MALFORMED_RECORD, f"{name} record: {bad_length}")
                continue
            if _runs_into_next_record(data):  # gzip: resynchronised at the next member
                raise RecordOverrunError(f"{name} record {_record_key(record)}: Content-Length runs into the next record")
            if len(data) < record.content_length:
                out.reject_record(_record_key(record), Reason.TRUNCATED_RECORD, f"{name} record: {len(data)} of {record.content_length} bytes")
                continue
            if kind == "wat_json":
                _process_wat_record(out, record, data)
            elif kind == "http_response":
                _process_warc_response(out, _record_key(record), record, data, _target_uri(record))
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
    ordered = links.sort_by([("uid", "ascending"), ("source_file", "ascending"), ("link_seq", "ascending")])
    uids = ordered.column("uid").to_pylist()
    first = [True] + [uids[i] != uids[i - 1] for i in range(1, len(uids))]
    mask = pa.array(first)
    kept = ordered.filter(mask)
    dups = ordered.filter(pa.compute.invert(mask))
    if dups.num_rows:
        where = {u: f"{s}#{q}" for u, s, q in zip(*(kept.column(c).to_pylist() for c in ("uid", "source_file", "link_seq")))}
        dup_uids = dups.column("uid").to_pylist()
        rejected = pa.table(
            {
                "uid": dup_uids,
                "stage": [STAGE] * len(dup_uids),
                "reason": [Reason.DUPLICATE_UID.value] * len(dup_uids),
                "detail": [f"kept {where[u]}; dropped {s}#{q}" for u, s, q in zip(dup_uids, dups.column("source_file").to_pylist(), dups.column("link_seq").to_pylist())],
            },
            schema=REJECTED.arrow_schema(),
        )
    else:
        rejected = REJECTED.empty()
    return kept.drop_columns(["link_seq"]), rejected


def bucket_of(uid: str, n_buckets: int) -> int:
    """Output shard of a uid: deterministic across engines and partitionings."""
    return int(uid[:8], 16) % n_buckets
