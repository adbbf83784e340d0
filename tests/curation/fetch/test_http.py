"""curation/fetch/http.py against the loopback server: HTTP errors and their transient flag, timeouts,
bounded bodies, X-Robots-Tag opt-outs (the same verdicts as img2dataset), retries (Retry-After
honoured), connection resets, IRI and IDN URLs, the user agent, and the digests of the body as it streamed in."""

from __future__ import annotations

import email.message
import hashlib
import time
from datetime import UTC, datetime

import pytest

from curation.fetch.http import (
    FetchFailed,
    READ_CHUNK,
    FetchOptions,
    fetch,
    fetch_body,
    is_transient,
    request_url,
    retry_after_seconds,
    robots_disallowed,
)
from curation.fetch.ssrf import AddressGuard, build_opener
from schemas import Reason
from tests.http_server import generated_cases

OPENER = build_opener(AddressGuard.from_config(["127.0.0.1"]))
OPTS = FetchOptions(timeout_s=1.0, max_transfer_s=2.0)
MAX_BYTES = 20 * 1024 * 1024


def _failure(server, path: str, opts: FetchOptions = OPTS, max_bytes: int = MAX_BYTES) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        fetch(server.url(path), OPENER, opts, max_bytes)
    return caught.value


@pytest.mark.parametrize(("code", "transient"), [(404, False), (403, False), (410, False), (429, True), (500, True), (503, True)])
def test_http_errors_name_the_status_and_say_whether_they_are_transient(image_server, code, transient):
    failure = _failure(image_server, f"/status/{code}")
    assert failure.reason == Reason.FAILED_TO_DOWNLOAD
    assert f"HTTP {code}" in failure.message
    assert is_transient(failure.message) is transient


def test_slow_response_times_out_as_transient(image_server):
    failure = _failure(image_server, "/slow", FetchOptions(timeout_s=0.3))
    assert failure.reason == Reason.FAILED_TO_DOWNLOAD and failure.transient
    assert "timed out" in failure.message


def test_dripping_response_is_cut_at_max_transfer_s(image_server):
    failure = _failure(image_server, "/drip", FetchOptions(timeout_s=1.0, max_transfer_s=0.5))
    assert failure.transient and "transfer longer than 0.5s" in failure.message


def test_body_over_max_bytes_is_refused_from_the_header_or_while_reading(image_server):
    assert _failure(image_server, "/gen/large.jpg", max_bytes=1000).reason == Reason.TOO_LARGE_BYTES  # Content-Length
    unbounded = _failure(image_server, "/unbounded", max_bytes=100_000)  # no length: counted while reading
    assert unbounded.reason == Reason.TOO_LARGE_BYTES and "body longer" in unbounded.message


def test_redirects_are_followed_and_loops_end(image_server):
    assert fetch(image_server.url("/redirect?to=/gen/photo.jpg"), OPENER, OPTS, MAX_BYTES)[:2] == b"\xff\xd8"
    loop = _failure(image_server, "/loop")
    assert loop.reason == Reason.FAILED_TO_DOWNLOAD and "\n" not in loop.message and not loop.transient


def test_connection_refused_and_unknown_host_fail_to_download():
    with pytest.raises(FetchFailed) as caught:
        fetch("http://127.0.0.1:9/x.jpg", OPENER, OPTS, MAX_BYTES)  # discard port: nothing listens
    assert caught.value.reason == Reason.FAILED_TO_DOWNLOAD and "Refused" in caught.value.message
    with pytest.raises(FetchFailed) as caught:
        fetch("http://no-such-host.invalid/x.jpg", OPENER, OPTS, MAX_BYTES)
    assert caught.value.reason == Reason.FAILED_TO_DOWNLOAD and caught.value.message.startswith(("dns:", "transient: dns:"))


@pytest.mark.parametrize(
    ("tag", "opted_out"),
    [("noai", True), ("noimageindex", True), ("noindex, nofollow", True), ("curation: noai", True),
     ("otherbot: noai", False), ("nofollow", False), ("all", False)],
)
def test_x_robots_tag_opt_out(image_server, tag, opted_out):
    path = f"/robots?tag={tag.replace(' ', '%20')}"
    if opted_out:
        failure = _failure(image_server, path)
        assert failure.reason == Reason.OPTED_OUT and tag in failure.message
    else:
        assert len(fetch(image_server.url(path), OPENER, OPTS, MAX_BYTES)) > 0


def test_robots_rule_gives_img2dataset_verdicts():
    from img2dataset.downloader import is_disallowed

    directives = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
    values = ["noai", "NoImageAI", "nofollow", "curation: noai", "otherbot: noindex", "curation: all",
              "none", "noarchive, noimageindex", "googlebot: nofollow, noai"]
    for value in values:
        headers = email.message.Message()
        headers["X-Robots-Tag"] = value
        assert robots_disallowed([value], "curation", directives) == is_disallowed(headers, "curation", directives), value


def test_opt_out_check_can_be_turned_off(image_server):
    opts = FetchOptions(timeout_s=1.0, disallowed_header_directives=())
    assert len(fetch(image_server.url("/robots?tag=noai"), OPENER, opts, MAX_BYTES)) > 0


def test_transient_errors_are_retried_and_permanent_ones_are_not(image_server):
    opts = FetchOptions(timeout_s=1.0, retries=1, retry_backoff_s=0.01)
    assert fetch(image_server.url("/flaky/retry-once"), OPENER, opts, MAX_BYTES)[:2] == b"\xff\xd8"
    assert image_server.hits("/flaky/retry-once") == 2
    _failure(image_server, "/flaky/no-retry")  # retries=0: the 503 is the answer
    assert image_server.hits("/flaky/no-retry") == 1
    before = image_server.hits("/status/404")
    _failure(image_server, "/status/404", FetchOptions(retries=3, retry_backoff_s=0.01))
    assert image_server.hits("/status/404") == before + 1


def test_user_agent_is_configurable(image_server):
    default = fetch(image_server.url("/ua"), OPENER, OPTS, MAX_BYTES).decode()
    assert "curation/" in default and default.startswith("Mozilla/5.0")
    custom = FetchOptions(user_agent="MyCrawler/2.0 (+https://example.org/bot)")
    assert fetch(image_server.url("/ua"), OPENER, custom, MAX_BYTES).decode() == custom.user_agent


def test_invalid_urls_fail_cleanly():
    for url in ("http://[::1/x.jpg", "notaurl", "http://127.0.0.1:99999/x"):
        with pytest.raises(FetchFailed) as caught:
            fetch(url, OPENER, OPTS, MAX_BYTES)
        assert caught.value.reason == Reason.FAILED_TO_DOWNLOAD


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 0 ", 0.0), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
     ("Wed, 21 Oct 2015 07:28:30 -0000", 30.0), ("-5", None), ("soon", None), ("", None), (None, None),
     ("\xb2", None), ("1\u0663", None), ("9" * 400, 365 * 24 * 3600.0), ("Wed, 21 Oct 99999 07:28:30 GMT", None)],
)
def test_retry_after_takes_seconds_or_an_http_date(value, seconds):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds(value, now) == seconds


def test_retry_after_is_waited_before_the_next_attempt(image_server):
    opts = FetchOptions(timeout_s=1.0, retries=1, retry_backoff_s=0.0)
    started = time.monotonic()
    assert fetch(image_server.url("/retry-after/1/photo/wait.jpg"), OPENER, opts, MAX_BYTES)[:2] == b"\xff\xd8"
    assert time.monotonic() - started >= 1.0 and image_server.hits("/retry-after/1/photo/wait.jpg") == 2
    date = fetch(image_server.url("/retry-after/date+2/photo/date.jpg"), OPENER, opts, MAX_BYTES)  # HTTP-date form
    assert date[:2] == b"\xff\xd8" and image_server.hits("/retry-after/date+2/photo/date.jpg") == 2


def test_retry_after_beyond_the_cap_gives_up_at_once_as_transient(image_server):
    opts = FetchOptions(timeout_s=1.0, retries=3, retry_backoff_s=0.0, max_retry_after_s=5.0)
    started = time.monotonic()
    failure = _failure(image_server, "/retry-after/3600/photo/never.jpg", opts)
    assert time.monotonic() - started < 1.0 and image_server.hits("/retry-after/3600/photo/never.jpg") == 1
    assert failure.transient and "Retry-After 3600s" in failure.message and "max_retry_after_s 5" in failure.message
    no_retries = _failure(image_server, "/retry-after/7/photo/later.jpg")  # retries = 0: the 429 is the answer
    assert no_retries.message == "transient: HTTP 429 Too Many Requests (Retry-After 7s)"


def test_connection_reset_without_a_response_is_transient(image_server):
    failure = _failure(image_server, "/reset")
    assert failure.reason == Reason.FAILED_TO_DOWNLOAD and failure.transient
    assert "Reset" in failure.message or "RemoteDisconnected" in failure.message


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://e.com/a.jpg?x=1", "http://e.com/a.jpg?x=1"),
        ("http://e.com/caf\u00e9 au lait.jpg?q=\u00df", "http://e.com/caf%C3%A9%20au%20lait.jpg?q=%C3%9F"),
        ("http://e.com/already%20quoted/\u00fc.jpg", "http://e.com/already%20quoted/%C3%BC.jpg"),
        ("https://b\u00fccher.example:8443/\u00fc.png", "https://xn--bcher-kva.example:8443/%C3%BC.png"),
        ("http://user@\u4f8b\u3048.jp/a.jpg", "http://user@xn--r8jz45g.jp/a.jpg"),
    ],
)
def test_urls_are_sent_the_way_a_browser_sends_them(url, sent):
    assert request_url(url) == sent


def test_iri_paths_and_idn_hosts_are_fetched(image_server):
    assert fetch(image_server.url("/photo/caf\u00e9 au lait.jpg"), OPENER, OPTS, MAX_BYTES)[:2] == b"\xff\xd8"
    assert "/photo/caf%C3%A9%20au%20lait.jpg" in image_server.requests
    opener = build_opener(AddressGuard.from_config(["127.0.0.1", "::1"]))
    fullwidth = f"http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{image_server.port}/photo/idn.jpg"  # IDNA: localhost
    assert fetch(fullwidth, opener, OPTS, MAX_BYTES)[:2] == b"\xff\xd8"
    with pytest.raises(FetchFailed) as caught:  # a label IDNA cannot encode (over 63 characters)
        fetch("http://" + "\u00fc" * 70 + ".example/a.jpg", OPENER, OPTS, MAX_BYTES)
    assert caught.value.reason == Reason.FAILED_TO_DOWNLOAD and caught.value.message.startswith("invalid url")


def test_body_digests_equal_hashlib_on_the_bytes_the_server_sent(image_server):
    sent = generated_cases()["large.jpg"][0]
    assert len(sent) > 2 * READ_CHUNK  # hashed over several chunks, as they arrived
    body = fetch_body(image_server.url("/gen/large.jpg"), OPENER, OPTS, MAX_BYTES, ("sha256", "md5", "sha1"))
    assert body.data == sent
    assert body.hexdigest("sha256") == hashlib.sha256(sent).hexdigest()
    assert body.hexdigest("md5") == hashlib.md5(sent).hexdigest()
    assert body.hexdigest("sha1") == hashlib.sha1(sent).hexdigest()


def test_body_fetched_by_default_carries_sha256_and_md5_and_plain_fetch_the_same_bytes(image_server):
    sent = generated_cases()["photo.jpg"][0]
    body = fetch_body(image_server.url("/redirect?to=/gen/photo.jpg"), OPENER, OPTS, MAX_BYTES)
    assert sorted(body.digests) == ["md5", "sha256"]
    assert body.digests["sha256"] == hashlib.sha256(sent).digest() and body.digests["md5"] == hashlib.md5(sent).digest()
    assert fetch(image_server.url("/gen/photo.jpg"), OPENER, OPTS, MAX_BYTES) == sent
