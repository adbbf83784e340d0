"""One crawl file's extraction as column lists: the link rules (url resolution, uid, bounds) and the
accumulator every reading (WAT fast and slow, WARC HTML) adds links and rejected rows to."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from urllib.parse import urljoin

import pyarrow as pa
from fastwarc.warc import WarcHeader

from curation.stage import rejected_table
from schemas import DETAIL, EXTRACTED_LINKS, REASON, UID, Reason

log = logging.getLogger(__name__)

STAGE = "extract"
_ALLOWED_PREFIXES = ("http://", "https://")
WHITESPACE = " \t\n\r\f\v"
_REPLACEMENT = "\ufffd"  # what undecodable bytes become


@dataclass(frozen=True)
class ExtractRules:
    """Safety bounds of the extraction stage (content rules belong to filter-text)."""

    max_alt_chars: int = 10_000  # an alt beyond this is junk or an attack; rejected alt_too_long
    max_url_chars: int = 4_096  # a longer image URL is rejected url_too_long
    max_html_bytes: int = 8 * 1024 * 1024  # larger WARC payloads are parsed up to this many bytes
    detail_chars: int = 300  # rejected detail strings are clipped to this


def make_uid(text: str, url: str) -> str:
    """cc2dataset's uid: md5 hex of alt text followed by the absolute url."""
    return hashlib.md5((text + url).encode("utf-8")).hexdigest()


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n] + f"...(+{len(s) - n} chars)"


def encodable(s: str | None) -> bool:
    """Whether ``s`` can be written as UTF-8 (no lone surrogate from a JSON \\ud800 escape)."""
    try:
        if s is not None:
            s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(s: str) -> str:
    """``s`` with lone surrogates written as \\udXXX escapes: a detail that parquet can store."""
    return s if encodable(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


def resolve_url(raw: str, base: str | None) -> tuple[str | None, Reason | None, str | None]:
    """Resolve an image link against the page/base URL; return (url, None, None) or (None, reason, detail)."""
    url = raw.strip(WHITESPACE)
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
            self.reject(safe_uid(alt, raw_url), reason, detail)
            return
        try:
            uid = make_uid(alt, url)
        except UnicodeEncodeError as e:  # lone surrogates from a JSON \\ud800 escape
            self.reject(safe_uid(alt, url), Reason.INVALID_ENCODING, f"{e.reason}: {url}")
            return
        if not alt.strip(WHITESPACE):
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
                UID: self.uids,
                "url": self.urls,
                "text": self.texts,
                "page_url": self.page_urls,
                "source_file": [self.source_file] * n,
                "link_seq": self.seqs,
            },
            schema=EXTRACTED_LINKS.arrow_schema(),
        )

    def rejected_table(self) -> pa.Table:
        return rejected_table({UID: self.rej_uids, REASON: self.rej_reasons, DETAIL: self.rej_details}, STAGE)


def safe_uid(alt: str, url: str) -> str:
    return hashlib.md5((alt + url).encode("utf-8", "surrogatepass")).hexdigest()


CONTENT_TYPE = WarcHeader.CONTENT_TYPE
_TARGET_URI = WarcHeader.WARC_TARGET_URI


def record_key(record) -> str:
    return record.record_id or f"offset={record.stream_pos}"


def target_uri(value: str | None) -> str | None:
    """A ``WARC-Target-URI`` as a URL, from a record header or a WAT's ``WARC-Header-Metadata``:
    surrounding whitespace dropped and wget's angle brackets (``<https://...>``, WARC/1.0's grammar)
    unwrapped; None when nothing is left. The WARC and both WAT readings share it."""
    if not value:
        return None
    uri = value.strip(WHITESPACE)
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip(WHITESPACE)
    return uri or None


def record_target_uri(record) -> str | None:
    return target_uri(record.headers.get(_TARGET_URI))
