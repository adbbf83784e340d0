"""curation/fetch/politeness.py: the host scheduler on a fake clock (limits, spacing, back-off, cool-down, probes),
the host lanes and the host-aware shard plan (pure, no Spark, no network)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from jobs.stages.config import ConfigError, load_config
from jobs.stages.download import auto_lanes, by_lane, plan_host_shards, plan_slices
from curation.fetch.politeness import HostScheduler, Lanes, PolitenessOptions, Signal, _crc, host_of, lane_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scheduler(hosts: list[str], **options) -> tuple[HostScheduler, Clock]:
    clock = Clock()
    return HostScheduler(hosts, PolitenessOptions(**options), clock), clock


def _drain(scheduler: HostScheduler) -> list:
    out = []
    while (ticket := scheduler.try_take()) is not None:
        out.append(ticket)
    return out


def test_no_more_than_max_connections_per_host_start_until_one_finishes():
    scheduler, _ = _scheduler(["a"] * 5 + ["b"] * 2, max_connections_per_host=2)
    started = _drain(scheduler)
    assert [(t.host, t.row) for t in started] == [("a", 0), ("a", 1), ("b", 5), ("b", 6)]
    scheduler.finish(started[0], Signal.OK)
    assert [(t.host, t.row) for t in _drain(scheduler)] == [("a", 2)]
    assert scheduler.stats.max_active == {"a": 2, "b": 2}


def test_zero_means_no_connection_limit():
    scheduler, _ = _scheduler(["a"] * 20, max_connections_per_host=0)
    assert len(_drain(scheduler)) == 20


def test_min_interval_spaces_the_starts_to_one_host():
    scheduler, clock = _scheduler(["a", "a", "a", "b"], min_interval_per_host_s=2.0)
    assert [t.row for t in _drain(scheduler)] == [0, 3]
    clock.now = 1.9
    assert _drain(scheduler) == []
    clock.now = 2.0
    assert [t.row for t in _drain(scheduler)] == [1]


def test_throttled_host_backs_off_exponentially_capped_and_honours_retry_after():
    scheduler, clock = _scheduler(["a"] * 6, max_connections_per_host=1, backoff_initial_s=1.0, backoff_max_s=5.0,
                                  failures_before_cooldown=100)
    waits = []
    (ticket,) = _drain(scheduler)
    for retry_after in (None, 3.5, None, None, None):
        start = clock.now
        scheduler.finish(ticket, Signal.THROTTLED, "HTTP 429", retry_after)
        while not (started := _drain(scheduler)):
            clock.now += 0.25
        waits.append(clock.now - start)
        (ticket,) = started
    assert waits == [1.0, 3.5, 4.0, 5.0, 5.0]  # 1, max(2, Retry-After 3.5), 4, then capped at 5
    assert scheduler.stats.throttled == 5 and scheduler.stats.backoff_s == sum(waits)


def test_success_resets_the_back_off():
    scheduler, clock = _scheduler(["a"] * 3, max_connections_per_host=1, backoff_initial_s=1.0)
    (first,) = _drain(scheduler)
    scheduler.finish(first, Signal.THROTTLED, "HTTP 503")
    clock.now = 1.0
    (second,) = _drain(scheduler)
    scheduler.finish(second, Signal.OK)
    assert [t.row for t in _drain(scheduler)] == [2]  # no wait after a success
    assert scheduler.stats.backoff_s == 1.0


def test_a_host_that_keeps_failing_cools_down_and_its_rows_fail_at_once():
    scheduler, _ = _scheduler(["dead"] * 10 + ["ok"] * 2, max_connections_per_host=3, failures_before_cooldown=3)
    started = _drain(scheduler)
    assert [t.host for t in started] == ["dead"] * 3 + ["ok"] * 2
    for ticket in started[:3]:
        scheduler.finish(ticket, Signal.FAILED, "timed out")
    cooled = _drain(scheduler)
    assert [t.row for t in cooled] == list(range(3, 10))
    assert all(t.cooled and "dead in cool-down: 3 consecutive failures, last: timed out" in t.cooled for t in cooled)
    assert scheduler.left == 0 and scheduler.stats.cooled_rows == 7 and scheduler.stats.cooldowns == 1


def test_a_success_between_failures_keeps_the_host_open():
    scheduler, _ = _scheduler(["a"] * 8, max_connections_per_host=1, failures_before_cooldown=2, backoff_initial_s=0.0)
    for signal in (Signal.FAILED, Signal.OK, Signal.FAILED, Signal.OK, Signal.FAILED):
        (ticket,) = _drain(scheduler)
        assert not ticket.cooled
        scheduler.finish(ticket, signal, "x")
    (ticket,) = _drain(scheduler)
    scheduler.finish(ticket, Signal.THROTTLED, "HTTP 429")  # second in a row
    assert [bool(t.cooled) for t in _drain(scheduler)] == [True, True]


def test_retry_after_beyond_the_cap_cools_the_host_at_once():
    scheduler, _ = _scheduler(["a"] * 4, max_connections_per_host=1, backoff_max_s=30.0, failures_before_cooldown=5)
    (ticket,) = _drain(scheduler)
    scheduler.finish(ticket, Signal.THROTTLED, "HTTP 429 Too Many Requests (Retry-After 3600s)", 3600.0)
    rest = _drain(scheduler)
    assert [t.row for t in rest] == [1, 2, 3] and all("Retry-After 3600s" in t.cooled for t in rest)


def test_rows_are_handed_out_in_input_order_across_hosts():
    hosts = ["a", "b", "a", "c", "b", "a"]
    scheduler, _ = _scheduler(hosts, max_connections_per_host=0)
    assert [t.row for t in _drain(scheduler)] == list(range(6))


def test_neutral_signal_changes_nothing():
    scheduler, _ = _scheduler(["a"] * 3, max_connections_per_host=1, failures_before_cooldown=1)
    (ticket,) = _drain(scheduler)
    scheduler.finish(ticket, Signal.NONE, "blocked")
    assert [t.cooled for t in _drain(scheduler)] == [None]


# --- host lanes and the shard plan -------------------------------------------------------------


def test_host_of_ignores_port_case_and_userinfo():
    assert host_of("http://User@IMG.Example.com:8080/a.jpg") == "img.example.com"
    assert host_of("not a url") == "" and host_of("http://[::1/") == ""


def _urls(n_hosts: int, per_host: list[int]) -> list[str]:
    return [f"http://h{h}.example/{i}.jpg" for h in range(n_hosts) for i in range(per_host[h])]


@pytest.mark.parametrize("tasks_per_host", [1, 2, 3, 8])
def test_one_hosts_rows_fall_in_at_most_tasks_per_host_lanes(tasks_per_host):
    urls = _urls(5, [400, 50, 10, 3, 1])
    lanes_of = defaultdict(set)
    for url in urls:
        lanes_of[host_of(url)].add(lane_of(url, 6, tasks_per_host))
    assert max(len(s) for s in lanes_of.values()) <= min(tasks_per_host, 6)
    assert len(lanes_of["h0.example"]) == min(tasks_per_host, 6)  # the big host does use its spread


def test_host_shards_account_for_every_row_once_in_input_order_and_bounded_size():
    files = ["f0.parquet", "f1.parquet"]
    urls = [_urls(4, [300, 40, 7, 1]), _urls(3, [5, 90, 20])]
    items = plan_host_shards(files, urls, rows_per_shard=50, lanes=4, tasks_per_host=2)
    for index, uri in enumerate(files):
        rows = [r for i in items if i.uri == uri for r in i.rows]
        assert sorted(rows) == list(range(len(urls[index])))  # every row exactly once
    for item in items:
        assert 0 < len(item.rows) <= 50 and list(item.rows) == sorted(item.rows)
        assert (item.start, item.stop) == (item.rows[0], item.rows[-1] + 1)
        assert item.shard == f"part-{files.index(item.uri):05d}-{item.lane:05d}-{item.shard[-4:]}"
        assert {lane_of(urls[files.index(item.uri)][r], 4, 2) for r in item.rows} == {item.lane}
    assert len({i.shard for i in items}) == len(items)
    tasks_per_host = Counter()
    for lane in by_lane(items):
        for host in {host_of(urls[files.index(i.uri)][r]) for i in lane for r in i.rows}:
            tasks_per_host[host] += 1
    assert max(tasks_per_host.values()) <= 2


def test_the_plan_is_a_pure_function_of_its_input():
    urls = [_urls(6, [30, 20, 10, 5, 5, 1])]
    first = plan_host_shards(["f"], urls, 10, 3, 2)
    assert first == plan_host_shards(["f"], [list(urls[0])], 10, 3, 2)


def test_lanes_default_to_the_slices_of_the_largest_file_and_slices_keep_todays_names():
    assert auto_lanes([10_000, 12_001, 3], 5_000) == 3 and auto_lanes([], 5_000) == 1
    items = plan_slices(["a", "b"], [10, 3], 4)
    assert [(i.shard, i.start, i.stop, i.lane) for i in items] == [
        ("part-00000-00000", 0, 4, 0), ("part-00000-00001", 4, 8, 1), ("part-00000-00002", 8, 10, 2),
        ("part-00001-00000", 0, 3, 3)]


def test_politeness_config_is_read_from_toml_and_checked(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[download.politeness]\nmax_connections_per_host = 2\nmin_interval_per_host_s = 0.5\ntasks_per_host = 3\n")
    polite = load_config(str(cfg)).download.politeness
    assert (polite.max_connections_per_host, polite.min_interval_per_host_s, polite.tasks_per_host) == (2, 0.5, 3)
    with pytest.raises(ConfigError, match="politeness"):
        PolitenessOptions(max_connections_per_host=-1)


def test_zero_turns_cool_down_and_back_off_off():
    scheduler, _ = _scheduler(["a"] * 12, max_connections_per_host=1, failures_before_cooldown=0, backoff_max_s=0.0)
    for _ in range(11):
        (ticket,) = _drain(scheduler)  # due at once: no back-off, even after Retry-After 3600
        assert not ticket.cooled
        scheduler.finish(ticket, Signal.THROTTLED, "HTTP 429", 3600.0)
    assert scheduler.stats.cooldowns == 0 and scheduler.stats.backoff_s == 0


@pytest.mark.parametrize("url", [
    "http://IMG.example.com/a.jpg", "https://user:pw@img.example.com:8443/a.jpg", "http://img.example.com",
    "http://img.example.com?x=1", "HTTP://Img.Example.com#frag", "http://[::1]:80/a", "http://bücher.example/ü.jpg",
    "//img.example.com/a.jpg", "not a url", "", "http://a\tb.example/x", "ftp://img.example.com/a", "http://[::1/",
])
def test_cached_lanes_agree_with_the_definition(url):
    lanes = Lanes(7, 3)
    lanes("http://img.example.com/warm-the-cache.jpg")
    assert lanes(url) == (_crc(host_of(url)) + _crc(url) % 3) % 7 == lane_of(url, 7, 3)


def test_thousands_of_429s_without_cool_down_keep_the_back_off_at_its_cap():
    scheduler, clock = _scheduler(["a"] * 2000, max_connections_per_host=1, failures_before_cooldown=0, backoff_max_s=2.0)
    for _ in range(1999):
        (ticket,) = _drain(scheduler)
        scheduler.finish(ticket, Signal.THROTTLED, "HTTP 429")
        clock.now += 2.0
    assert scheduler.stats.backoff_s == 1.0 + 2.0 * 1998


def test_a_book_carries_cool_down_and_back_off_to_the_next_shard_of_the_task():
    book = {}
    first, clock = _scheduler(["dead", "dead", "slow"], max_connections_per_host=1, failures_before_cooldown=2)
    first = HostScheduler(["dead", "dead", "slow"], first.opts, clock, book)
    dead1, slow = _drain(first)
    first.finish(dead1, Signal.FAILED, "timed out")
    first.finish(slow, Signal.THROTTLED, "HTTP 429", 5.0)
    (dead2,) = _drain(first)
    first.finish(dead2, Signal.FAILED, "timed out")
    second = HostScheduler(["slow", "dead", "new"], first.opts, clock, book)
    started = _drain(second)
    assert [(t.host, bool(t.cooled)) for t in started] == [("dead", True), ("new", False)]  # slow: backing off
    clock.now = 5.0
    assert [t.host for t in _drain(second)] == ["slow"]
