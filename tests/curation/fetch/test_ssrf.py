"""curation/fetch/ssrf.py: the guard blocks non-public addresses after resolution and after every redirect,
and the loopback server is only ever contacted when 127.0.0.1 is allow-listed."""

from __future__ import annotations

import ipaddress

import pyarrow as pa
import urllib.error

import pytest

from curation.fetch.http import FetchFailed, FetchOptions, fetch
from curation.fetch.ssrf import AddressGuard, BlockedAddressError, blocked_because, build_opener, parse_networks
from schemas import Reason

OPTS = FetchOptions(timeout_s=2.0)
MAX_BYTES = 20 * 1024 * 1024
LOOPBACK_ALLOWED = AddressGuard.from_config(["127.0.0.1"])


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),  # shared address space (carrier-grade NAT)
        ("::ffff:127.0.0.1", "loopback (embedded in ::ffff:7f00:1)"),
        ("::ffff:169.254.169.254", "cloud metadata (embedded in ::ffff:a9fe:a9fe)"),
        ("2002:7f00:1::", "loopback (embedded in 2002:7f00:1::)"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private (embedded in 64:ff9b::a00:1)"),  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_blocked_with_the_reason(address, why):
    assert blocked_because(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert blocked_because(ipaddress.ip_address(address)) is None


def test_allow_list_takes_addresses_and_networks_and_rejects_host_names():
    guard = AddressGuard.from_config(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert guard.check("h", "127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert guard.check("h", "10.9.8.7") == ipaddress.ip_address("10.9.8.7")
    assert guard.check("h", "::1") == ipaddress.ip_address("::1")
    with pytest.raises(BlockedAddressError, match="loopback"):
        guard.check("h", "127.0.0.2")
    with pytest.raises(BlockedAddressError, match="cloud metadata"):
        guard.check("h", "169.254.169.254")
    with pytest.raises(ValueError, match="localhost"):
        parse_networks(["localhost"])


def test_one_blocked_answer_blocks_the_host_dns_rebinding_style():
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.5"], "public.example": ["93.184.215.14"]}
    guard = AddressGuard(resolver=lambda host, port: answers[host])
    with pytest.raises(BlockedAddressError, match="mixed.example -> 10.0.0.5: private"):
        guard.resolve("mixed.example", 80)
    assert guard.resolve("public.example", 80) == [ipaddress.ip_address("93.184.215.14")]


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(image_server):
    calls = []

    def resolver(host, port):  # answers 127.0.0.1 once; a second lookup would get a blocked address
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.1"]

    guard = AddressGuard(parse_networks(["127.0.0.1"]), resolver=resolver)
    url = f"http://images.test:{image_server.port}/gen/photo.jpg"
    assert len(fetch(url, build_opener(guard), OPTS, MAX_BYTES)) > 0
    assert calls == ["images.test"]


def test_only_allowed_blocks_public_addresses_too():
    guard = AddressGuard.from_config(["127.0.0.1"], only_allowed=True)
    with pytest.raises(BlockedAddressError, match="not allow-listed"):
        guard.check("example.com", "93.184.215.14")
    with pytest.raises(BlockedAddressError, match="private"):  # a private address is named as such
        guard.check("intranet", "10.0.0.1")
    assert guard.check("h", "127.0.0.1")


@pytest.mark.parametrize(
    "url_template",
    [
        "http://127.0.0.1:{port}/gen/photo.jpg",
        "http://localhost:{port}/gen/photo.jpg",  # a name that resolves to loopback
        "http://2130706433:{port}/gen/photo.jpg",  # 127.0.0.1 as one decimal number
        "http://0x7f.1:{port}/gen/photo.jpg",
        "https://127.0.0.1:{port}/gen/photo.jpg",  # blocked before any TLS handshake
    ],
)
def test_without_the_allow_list_the_loopback_server_is_never_contacted(image_server, url_template):
    before = len(image_server.requests)
    with pytest.raises(FetchFailed) as caught:
        fetch(url_template.format(port=image_server.port), build_opener(AddressGuard()), OPTS, MAX_BYTES)
    assert caught.value.reason == Reason.BLOCKED_ADDRESS
    assert "loopback" in caught.value.detail
    assert len(image_server.requests) == before  # not one request reached the server


def test_with_the_allow_list_the_same_url_is_fetched(image_server):
    body = fetch(image_server.url("/gen/photo.jpg"), build_opener(LOOPBACK_ALLOWED), OPTS, MAX_BYTES)
    assert body[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "cloud metadata"),
        ("http://10.0.0.1/admin", "private"),
        ("http://[::1]:9/", "loopback"),
        ("http://[::ffff:192.168.0.1]/", "private"),
    ],
)
def test_redirect_to_a_private_address_is_blocked_after_the_hop(image_server, target, why):
    with pytest.raises(FetchFailed) as caught:
        fetch(image_server.url(f"/redirect?to={target}"), build_opener(LOOPBACK_ALLOWED), OPTS, MAX_BYTES)
    assert caught.value.reason == Reason.BLOCKED_ADDRESS
    assert why in caught.value.detail
    assert image_server.hits("/redirect") >= 1  # the first hop was allowed; the second never connected


def test_redirect_to_another_scheme_is_refused(image_server):
    for target in ("file:///etc/passwd", "ftp://127.0.0.1/x"):
        with pytest.raises(FetchFailed) as caught:
            fetch(image_server.url(f"/redirect?to={target}"), build_opener(LOOPBACK_ALLOWED), OPTS, MAX_BYTES)
        assert caught.value.reason == Reason.FAILED_TO_DOWNLOAD


def test_opener_has_no_proxy_and_no_file_handler(monkeypatch, tmp_path):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would be used by urllib's default opener
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    opener = build_opener(LOOPBACK_ALLOWED)
    with pytest.raises(urllib.error.URLError, match="unknown url type"):
        opener.open(secret.as_uri())
    assert not any(type(h).__name__ == "ProxyHandler" and h.proxies for h in opener.handlers)


def _no_lookup(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver called for {host!r}")


@pytest.mark.parametrize("host", ["example.com", "img.example.org", "images.test", "2130706433", "0x7f.1"])
def test_only_allowed_looks_up_no_host_name(host):
    """The offline sample's guard: a name that is not a literal address or localhost is refused as
    blocked_address before any resolver call, so a closed run sends no DNS query off the machine."""
    guard = AddressGuard(parse_networks(["127.0.0.1"]), only_allowed=True, resolver=_no_lookup)
    with pytest.raises(BlockedAddressError, match="host name is not looked up under only_allowed_addresses"):
        guard.resolve(host, 80)


def test_only_allowed_still_resolves_literals_and_localhost():
    seen = []
    guard = AddressGuard(parse_networks(["127.0.0.1", "::1"]), only_allowed=True,
                         resolver=lambda host, port: seen.append(host) or ["127.0.0.1"])
    assert [str(ip) for ip in guard.resolve("127.0.0.1", 80)] == ["127.0.0.1"]
    assert [str(ip) for ip in guard.resolve("localhost", 80)] == ["127.0.0.1"]
    assert seen == ["127.0.0.1", "localhost"]


def test_sample_links_are_fetched_or_blocked_without_any_dns_query(image_server, monkeypatch, tmp_path):
    """The embedded sample's links under its own fetch settings (configs/sample.toml): every host name
    (example.* sites) ends as blocked_address, every loopback link is fetched, and the system resolver is
    asked only about literal addresses."""
    import socket

    from jobs.stages.config import load_config
    from curation.crawl.reader import extract_file
    from jobs.stages.download import download_table
    from curation.sample.crawl_files import write_sample
    from tests.conftest import REPO

    manifest = write_sample(str(tmp_path), pages=12, image_host=image_server.url("/photo"))
    links = [row for f in manifest["files"] for row in extract_file(f).links_table().to_pylist()]
    asked: list[str] = []
    real = socket.getaddrinfo

    def only_literals(host, *args, **kwargs):
        asked.append(host)
        ipaddress.ip_address(host)  # a name here would be a DNS query: ValueError fails the fetch and the test below
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", only_literals)
    opts = load_config(str(REPO / "configs" / "sample.toml")).download
    rows = pa.Table.from_pylist([{"uid": r["uid"], "url": r["url"], "text": r["text"]} for r in links])
    kept, rejected = download_table(rows, opts)
    named = {r["uid"] for r in links if not r["url"].startswith("http://127.0.0.1")}
    blocked = {r["uid"] for r in rejected.to_pylist() if r["reason"] == Reason.BLOCKED_ADDRESS}
    assert named and named <= blocked
    assert kept.num_rows > 0 and set(asked) == {"127.0.0.1"}
