"""Fetching one image URL the way img2dataset's ``download_image`` does (urllib, its User-Agent shape,
its X-Robots-Tag rule), with an injected SSRF-guarded opener, a bounded body, structured errors, and
retries of transient errors only.

img2dataset's code is not called at run time, for two reasons: ``download_image`` uses the process-global
``urllib.request.urlopen`` and reads the body unbounded (the only way to give it the guard would be
``install_opener``, which changes every urllib call in the worker process), and importing anything from
the ``img2dataset`` package imports its ``main`` module, which pulls torch (via webdataset), OpenCV and
albumentations into every worker (3.6 s here) and lets albumentations query PyPI for updates.
:func:`robots_disallowed` reimplements its ``is_disallowed``; tests/curation/fetch/test_http.py checks that the
two agree. The opener comes from :func:`curation.fetch.ssrf.build_opener`, one per task.

A failure is a :class:`FetchFailed` with a Reason, a detail naming the HTTP status or error, and whether
it is *transient* (timeouts, 408/425/429/5xx gateway errors, connections reset mid-way, DNS "try again"):
those are retried ``retries`` times in the run, and a rerun of the stage retries the rows that still
failed with one (their detail starts with :data:`TRANSIENT`). A 429/503 ``Retry-After`` (seconds or an
HTTP date) replaces the backoff before the next attempt; one longer than ``max_retry_after_s`` ends the
attempts at once (still transient: a later rerun fetches the row again).

URLs are fetched as browsers send them (:func:`request_url`): an IDN host in IDNA form, non-ASCII
characters, spaces and control characters of the path and query percent-encoded as UTF-8. The stored
``url`` stays as found in the page (the uid is computed from it).

:func:`fetch_body` hashes the body while it streams in (each chunk updates the hashlib objects as it is
read, so there is no second pass over the bytes): the ``sha256`` and ``md5`` columns of the fetched
table, and ``sha1`` when a safety list asks for it (jobs/stages/download.py).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import quote, urlsplit, urlunsplit

from curation import __version__
from curation.fetch.ssrf import BlockedAddressError
from schemas import Reason, Rejection

TRANSIENT = "transient: "
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUS = frozenset({429, 503})  # the statuses whose Retry-After header is honoured
_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))  # left as is by request_url (existing escapes too)
READ_CHUNK = 256 * 1024
CONTENT_DIGESTS = ("sha256", "md5")  # hashed on every body: the fetched table's columns


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float = 10.0  # per socket operation (connect, each read)
    max_transfer_s: float = 60.0  # whole response; defeats servers that drip bytes under the timeout
    retries: int = 0  # extra attempts in the same run, transient errors only
    retry_backoff_s: float = 1.0  # sleep before attempt n: backoff * 2**(n-1)
    max_retry_after_s: float = 10.0  # a longer 429/503 Retry-After ends the attempts (a rerun retries)
    user_agent_token: str = "curation"  # the token X-Robots-Tag directives may name ("curation: noai")
    user_agent: str = ""  # full User-Agent header; default: img2dataset's, with the token
    # X-Robots-Tag directives (for all agents or for user_agent_token) that opt an image out (opted_out)
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    allowed_addresses: tuple[str, ...] = ()  # IPs/CIDRs the SSRF guard lets through, e.g. ["127.0.0.1"]
    only_allowed_addresses: bool = False  # fetch from the allow-list only (offline demo, closed network)
    max_redirects: int = 10  # redirect hops followed (each one checked by the SSRF guard)

    def robots_token(self) -> str | None:
        return self.user_agent_token.strip().lower() or None

    def robots_directives(self) -> frozenset[str]:
        return frozenset(d.strip().lower() for d in self.disallowed_header_directives)

    def user_agent_header(self) -> str:
        if self.user_agent:
            return self.user_agent
        base = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
        return f"{base} (compatible; {self.user_agent_token}/{__version__})" if self.user_agent_token else base


class FetchFailed(Exception):
    def __init__(
        self, reason: Reason, detail: str, transient: bool = False, retry_after: float | None = None,
        status: int | None = None, unreachable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.transient = reason, detail, transient
        self.retry_after = retry_after  # seconds the server asked to wait (Retry-After), if it did
        self.status = status  # the HTTP status, when the host answered with an error
        self.unreachable = unreachable  # connection refused (permanent for the row, a sign for the host)

    @property
    def message(self) -> str:
        return (TRANSIENT if self.transient else "") + self.detail

    @property
    def rejection(self) -> Rejection:
        """The row's verdict: the reason and the message (a transient failure's marks it for a rerun)."""
        return Rejection(self.reason, self.message)


def robots_disallowed(values: list[str], user_agent_token: str | None, directives: frozenset[str]) -> bool:
    """True when an X-Robots-Tag value forbids use: img2dataset's ``is_disallowed`` rule (a value is
    ``[token:] directive, directive``; it applies when it names no token or ours)."""
    for value in values:
        parts = value.split(":", 1)
        named = [d.strip().lower() for d in parts[-1].split(",")]
        token = parts[0].strip().lower() if len(parts) == 2 else None
        if (token is None or token == user_agent_token) and any(d in directives for d in named):
            return True
    return False


def is_transient(detail: str | None) -> bool:
    return bool(detail) and detail.startswith(TRANSIENT)


MAX_RETRY_AFTER_S = 365 * 24 * 3600.0  # a larger value is read as a year: a wait nobody will make


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` value asks for: delta-seconds or an HTTP date (a past date: 0).
    None when absent or unreadable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():  # ("²".isdigit() is True; float() refuses it)
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def request_url(url: str) -> str:
    """``url`` as an ASCII URI, the way a browser sends it: the host in IDNA form (``bücher.example`` ->
    ``xn--bcher-kva.example``), other non-ASCII characters, spaces and control characters
    percent-encoded as UTF-8; printable ASCII, existing escapes included, is left as is.
    UnicodeError (a ValueError) for a host IDNA cannot encode."""
    if url.isascii() and url.isprintable() and " " not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        netloc = quote(userinfo, safe=_PRINTABLE_ASCII) + at + host.encode("idna").decode("ascii") + colon + port
    path, query, fragment = (quote(p, safe=_PRINTABLE_ASCII) for p in (parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _network_failure(err: BaseException) -> FetchFailed:
    """Classify what urllib/http.client/socket raised (possibly wrapped in URLError)."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        inner = err.reason
        if isinstance(inner, BaseException):
            return _network_failure(inner)
        return FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"url error: {inner}")
    if isinstance(err, BlockedAddressError):
        return FetchFailed(Reason.BLOCKED_ADDRESS, str(err))
    if isinstance(err, TimeoutError):  # socket.timeout is TimeoutError
        return FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"timed out: {err}", transient=True)
    if isinstance(err, socket.gaierror):
        return FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"dns: {err}", transient=err.errno == socket.EAI_AGAIN)
    transient_types = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.IncompleteRead)
    return FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"{type(err).__name__}: {err}", transient=isinstance(err, transient_types),
                       unreachable=isinstance(err, ConnectionRefusedError))


@dataclass(frozen=True)
class Body:
    """A response body as it arrived, and its digests (algorithm name -> raw digest) computed while it streamed."""

    data: bytes
    digests: dict[str, bytes]

    def hexdigest(self, algorithm: str) -> str:
        return self.digests[algorithm].hex()


def _read_bounded(response, max_bytes: int, deadline: float, max_transfer_s: float, algorithms: tuple[str, ...]) -> Body:
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchFailed(Reason.TOO_LARGE_BYTES, f"Content-Length {length} > max_bytes {max_bytes}")
    hashers = [hashlib.new(a, usedforsecurity=False) for a in algorithms]  # content ids, not signatures
    chunks, total = [], 0
    while chunk := response.read1(READ_CHUNK):  # at most one recv: the deadline is checked often
        total += len(chunk)
        if total > max_bytes:
            raise FetchFailed(Reason.TOO_LARGE_BYTES, f"body longer than max_bytes {max_bytes}")
        if time.monotonic() > deadline:
            raise FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"transfer longer than {max_transfer_s}s", transient=True)
        for h in hashers:
            h.update(chunk)
        chunks.append(chunk)
    return Body(b"".join(chunks), {a: h.digest() for a, h in zip(algorithms, hashers)})


def fetch_once(
    url: str, opener: urllib.request.OpenerDirector, opts: FetchOptions, max_bytes: int, algorithms: tuple[str, ...] = ()
) -> Body:
    """The body of ``url`` with its ``algorithms`` digests, or FetchFailed."""
    deadline = time.monotonic() + opts.max_transfer_s
    try:
        request = urllib.request.Request(request_url(url), headers={"User-Agent": opts.user_agent_header()})
        with opener.open(request, timeout=opts.timeout_s) as response:
            tags = response.headers.get_all("X-Robots-Tag", [])
            if tags and robots_disallowed(tags, opts.robots_token(), opts.robots_directives()):
                raise FetchFailed(Reason.OPTED_OUT, f"X-Robots-Tag: {'; '.join(tags)}")
            return _read_bounded(response, max_bytes, deadline, opts.max_transfer_s, algorithms)
    except urllib.error.HTTPError as e:
        e.close()
        message = " ".join(f"HTTP {e.code} {e.reason}".split())  # urllib's redirect-loop reason spans lines
        wait = retry_after_seconds((e.headers or {}).get("Retry-After")) if e.code in RETRY_AFTER_STATUS else None
        if wait is not None:
            message += f" (Retry-After {wait:.0f}s)"
        raise FetchFailed(Reason.FAILED_TO_DOWNLOAD, message, e.code in TRANSIENT_STATUS, wait, e.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _network_failure(e) from None
    except ValueError as e:  # urllib's "unknown url type", malformed ports and hosts
        raise FetchFailed(Reason.FAILED_TO_DOWNLOAD, f"invalid url: {e}") from None


def fetch(url: str, opener: urllib.request.OpenerDirector, opts: FetchOptions, max_bytes: int) -> bytes:
    """The body of ``url`` (:func:`fetch_body` without digests)."""
    return fetch_body(url, opener, opts, max_bytes, ()).data


def fetch_body(
    url: str, opener: urllib.request.OpenerDirector, opts: FetchOptions, max_bytes: int,
    algorithms: tuple[str, ...] = CONTENT_DIGESTS,
) -> Body:
    """:func:`fetch_once` with up to ``opts.retries`` more attempts while the failure is transient,
    waiting the server's Retry-After (up to ``max_retry_after_s``) or else the exponential backoff."""
    for attempt in range(opts.retries + 1):
        try:
            return fetch_once(url, opener, opts, max_bytes, algorithms)
        except FetchFailed as e:
            if not e.transient or attempt == opts.retries:
                raise
            if e.retry_after is not None and e.retry_after > opts.max_retry_after_s:
                detail = f"{e.detail} > max_retry_after_s {opts.max_retry_after_s:g}"
                raise FetchFailed(e.reason, detail, True, e.retry_after, e.status) from None
            time.sleep(opts.retry_backoff_s * 2**attempt if e.retry_after is None else e.retry_after)
    raise AssertionError("unreachable")
