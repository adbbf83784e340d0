"""The download stage's per-host politeness against loopback servers playing three hosts (127.0.0.2-4):
the connection maxima counted by the servers, back-off on 429/503, cool-down of a failing host (its rows
recorded at once as transient), and the job-wide bound through host lanes. Counts and reasons only."""

from __future__ import annotations

from dataclasses import replace

from jobs.stages.config import DownloadOptions
from jobs.stages.download import fetch_rows
from curation.fetch.http import FetchOptions, is_transient
from curation.fetch.politeness import PolitenessOptions
from filters.image import StoredImage
from schemas import Reason

FETCH = FetchOptions(timeout_s=20.0, max_transfer_s=30.0, allowed_addresses=("127.0.0.0/8",))  # generous: a loaded machine must not turn answers into timeouts
POLITE = PolitenessOptions(max_connections_per_host=2, backoff_initial_s=0.01, backoff_max_s=0.05, failures_before_cooldown=3)
OPTS = DownloadOptions(fetch=FETCH, threads=16, politeness=POLITE)


def _reset(servers) -> None:
    for server in servers:
        server.reset_concurrency()


def test_no_host_sees_more_than_max_connections_per_host(host_servers):
    _reset(host_servers)
    urls = [s.url(f"/gen/photo.jpg?n=limit-{i}&delay=0.2") for i in range(12) for s in host_servers]
    results, stats = fetch_rows(urls, OPTS)
    assert all(isinstance(r, StoredImage) for r in results)
    assert [s.max_concurrent for s in host_servers] == [2, 2, 2]  # 16 threads, yet 2 per host
    assert max(stats.max_active.values()) == 2


def test_without_a_limit_one_host_gets_every_thread(host_servers):
    """The counterpart of the test above: the server does see more when nothing limits the client."""
    server = host_servers[0]
    _reset([server])
    unlimited = replace(OPTS, threads=8, politeness=replace(POLITE, max_connections_per_host=0))
    fetch_rows([server.url(f"/gen/photo.jpg?n=free-{i}&delay=0.5") for i in range(16)], unlimited)
    assert server.max_concurrent > 2


def test_a_host_answering_429_to_everything_costs_a_few_requests_not_one_per_row(host_servers):
    throttling, healthy = host_servers[0], host_servers[1]
    before = throttling.hits("/status/429")
    urls = [throttling.url(f"/status/429?n={i}") for i in range(40)] + [healthy.url(f"/gen/photo.jpg?n=ok-{i}") for i in range(10)]
    results, stats = fetch_rows(urls, OPTS)
    requests = throttling.hits("/status/429") - before
    # the 3rd consecutive 429 cools the host; at most max_connections_per_host - 1 more were in flight
    assert 3 <= requests <= 3 + 1
    cooled = [r for r in results[:40] if "in cool-down" in r.detail]
    assert len(cooled) == 40 - requests and stats.cooled_rows == len(cooled) and stats.cooldowns == 1
    assert all(r.reason == Reason.FAILED_TO_DOWNLOAD and is_transient(r.detail) for r in results[:40])
    assert "3 consecutive failures, last: HTTP 429" in cooled[0].detail
    assert all(isinstance(r, StoredImage) for r in results[40:])  # the other host is not held back
    assert stats.throttled == requests and stats.backoff_s > 0


def test_retry_after_beyond_the_back_off_cap_cools_the_host_after_one_answer(host_servers):
    server = host_servers[2]
    before = server.hits("/status/503")
    slow = replace(OPTS, politeness=replace(POLITE, max_connections_per_host=1))
    results, stats = fetch_rows([server.url(f"/status/503?retry_after=3600&n={i}") for i in range(10)], slow)
    assert server.hits("/status/503") - before == 1
    assert results[0].detail == "transient: HTTP 503 Service Unavailable (Retry-After 3600s)"
    assert all("in cool-down" in r.detail and "Retry-After 3600s" in r.detail for r in results[1:])


def test_a_refusing_host_cools_down_and_its_rows_stay_retryable(host_servers):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on: connection refused
        s.bind(("127.0.0.5", 0))
        port = s.getsockname()[1]
    urls = [f"http://127.0.0.5:{port}/x{i}.jpg" for i in range(30)] + [host_servers[1].url("/gen/photo.jpg")]
    results, stats = fetch_rows(urls, replace(OPTS, politeness=replace(POLITE, max_connections_per_host=1)))
    refused = [r for r in results[:30] if "ConnectionRefusedError" in r.detail and "cool-down" not in r.detail]
    assert len(refused) == 3 and not any(is_transient(r.detail) for r in refused)  # as today: permanent
    assert sum("in cool-down" in r.detail and is_transient(r.detail) for r in results[:30]) == 27
    assert isinstance(results[30], StoredImage) and stats.cooldowns == 1


def test_min_interval_spaces_requests_and_is_counted_as_waiting(host_servers):
    server = host_servers[0]
    _reset([server])
    spaced = replace(OPTS, politeness=replace(POLITE, max_connections_per_host=0, min_interval_per_host_s=0.05))
    results, stats = fetch_rows([server.url(f"/gen/photo.jpg?n=spaced-{i}") for i in range(4)], spaced)
    assert all(isinstance(r, StoredImage) for r in results)
    assert stats.waited_s > 0  # threads waited for the interval (never asserted as a duration)
