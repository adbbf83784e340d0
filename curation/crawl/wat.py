"""WAT records: the image links of a metadata record's ``HTML-Metadata.Links``.

A WAT record is read by a simdjson fast path that gives exactly what the orjson reading gives and
hands it every record it cannot be sure of (see "Fast path" below); ``bench/extract.py`` measures it.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urljoin

import orjson
import simdjson

from curation.crawl.links import FileExtraction, encodable, record_key, safe_uid, record_target_uri, resolve_url, target_uri
from schemas import Reason


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


def process_wat_record(out: FileExtraction, record, data: bytes) -> None:
    if not _process_wat_record_fast(out, data, record):
        _process_wat_record_slow(out, record_key(record), data, record_target_uri(record))


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
    page_ok = encodable(page_url)  # only this slow path reads \\ud800 escapes (the standard library's parser)
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
                out.reject(safe_uid(alt, url), Reason.INVALID_ENCODING, f"lone surrogate in the page URL {page_url!r}")
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
    page_url = target_uri(page_url) or record_target_uri(record)
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


