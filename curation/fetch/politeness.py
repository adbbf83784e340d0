"""Politeness toward image hosts: per-host connection limits, spacing, back-off and cool-down inside a
download task (:class:`HostScheduler`), and the host lanes that bound how many tasks reach one host
(:func:`lane_of`, used by jobs.stages.download's planner).

Within a task the rows are queued per host. A worker thread asks the scheduler for its next row; the
scheduler hands out the earliest pending row (input order) of a host that has a free connection
(``max_connections_per_host``), whose next start is due (``min_interval_per_host_s`` after the previous
start) and that is not backing off. A 429/503 answer (with or without ``Retry-After``) backs its host off
exponentially (``backoff_initial_s`` doubling, capped at ``backoff_max_s``; a longer ``Retry-After`` is
honoured up to the cap, and one beyond the cap sends the host straight to cool-down). After
``failures_before_cooldown`` consecutive failures (429/503, other transient errors, timeouts, connection
refused) the host is in cool-down for the rest of the task: its remaining rows are recorded at once as
transient failures (a rerun retries them, as every transient failure) instead of each waiting for a
timeout or a back-off. So a host answering 429 to everything costs the task at most the back-offs before
the threshold (``backoff_initial_s`` x (1 + 2 + ... + 2**(failures_before_cooldown - 2)), each capped),
and a dead host at most ``failures_before_cooldown`` timeouts per connection slot. Other hosts' rows keep
the threads busy while a host waits, so a slow host costs its own rows only.

Across tasks: every row goes to one of ``lanes`` lanes, by a hash of its host plus a hash of its URL
modulo ``tasks_per_host``, so one host's rows fall in at most ``tasks_per_host`` lanes. A lane's shards
run one after another in one task, so at most ``tasks_per_host`` tasks fetch from one host at a time and
the job-wide limit is ``tasks_per_host x max_connections_per_host`` connections per host.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from curation.errors import ConfigError


@dataclass(frozen=True)
class PolitenessOptions:
    max_connections_per_host: int = 8  # concurrent fetches per host in one task (0 = no limit)
    min_interval_per_host_s: float = 0.0  # between two request starts to one host in one task
    backoff_initial_s: float = 1.0  # first wait after a 429/503; doubles with each further one
    backoff_max_s: float = 60.0  # cap of that wait (0: no back-off); a longer Retry-After: cool-down
    # consecutive failures of a host (429/503, timeouts, refused, 5xx) before its remaining rows in the task
    # fail at once as transient (a rerun retries them); 0 = never
    failures_before_cooldown: int = 5
    tasks_per_host: int = 4  # lanes (tasks) one host's rows may fall in; 0 = no host-aware sharding
    lanes: int = 0  # tasks of the job; 0 = the largest input file's rows / rows_per_shard

    def __post_init__(self) -> None:
        if min(self.max_connections_per_host, self.tasks_per_host, self.lanes, self.failures_before_cooldown) < 0:
            raise ConfigError("[download.politeness] limits must be >= 0")
        if min(self.min_interval_per_host_s, self.backoff_initial_s, self.backoff_max_s) < 0:
            raise ConfigError("[download.politeness] durations must be >= 0")


def host_of(url: str) -> str:
    """The host a URL's request goes to (lower case, no port); "" when there is none."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def lane_of(url: str, lanes: int, tasks_per_host: int) -> int:
    """The lane of a row: its host's lane plus (url hash mod tasks_per_host), so a host's rows fall in
    at most ``tasks_per_host`` consecutive lanes. Stable across processes and runs (CRC-32, not hash())."""
    return Lanes(lanes, tasks_per_host)(url)


_NETLOC = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


class Lanes:
    """:func:`lane_of` for many URLs: the host's CRC is computed once per distinct authority."""

    def __init__(self, lanes: int, tasks_per_host: int) -> None:
        self.lanes, self.spread = lanes, max(1, min(tasks_per_host, lanes))
        self._host_crc: dict[str, int] = {}

    def __call__(self, url: str) -> int:
        match = _NETLOC.match(url)
        if match is None:  # unusual shapes: no cache (the host depends on the authority only)
            base = _crc(host_of(url))
        elif (base := self._host_crc.get(match.group(1))) is None:
            base = self._host_crc[match.group(1)] = _crc(host_of(url))
        return (base + (_crc(url) % self.spread if self.spread > 1 else 0)) % self.lanes


class Signal(Enum):
    """What a fetch says about its host."""

    OK = "ok"  # the host answered (any status but 429/503/5xx, or a body)
    THROTTLED = "throttled"  # 429 or 503: back off
    FAILED = "failed"  # timeout, refused, reset, other 5xx: counts toward cool-down
    NONE = "none"  # no contact (blocked address, invalid URL)


@dataclass(frozen=True)
class Ticket:
    row: int
    host: str
    cooled: str | None = None  # set: do not fetch; the row fails at once with this detail


@dataclass
class _Host:
    name: str
    pending: deque[int]
    active: int = 0
    not_before: float = 0.0
    failures: int = 0  # consecutive
    level: int = 0  # back-off exponent
    cooled_because: str = ""  # set: in cool-down for the rest of the task


@dataclass
class PolitenessStats:
    backoff_s: float = 0.0  # back-off imposed on hosts (host-seconds)
    waited_s: float = 0.0  # worker-thread seconds idle because every pending host was held back
    throttled: int = 0  # 429/503 answers
    cooled_rows: int = 0  # rows failed at once because their host was in cool-down
    cooldowns: int = 0  # times a host entered cool-down
    max_active: dict[str, int] = field(default_factory=dict)  # most concurrent fetches seen per host

    def as_extra(self) -> dict:
        return {"backoff_s": round(self.backoff_s, 3), "waited_s": round(self.waited_s, 3), "throttled": self.throttled,
                "cooled_rows": self.cooled_rows, "cooldowns": self.cooldowns}


HostBook = dict[str, _Host]  # what a task knows of its hosts (back-off, failures, cool-down), shard to shard


class HostScheduler:
    """Hands out rows to worker threads under the per-host rules (see the module docstring).

    ``take()`` blocks until a row may start and returns its ticket, or None when every row has been
    handed out; every non-cooled ticket must be followed by ``finish(ticket, signal, ...)``. A ``book``
    shared by the schedulers of a task's shards (run one after another) carries each host's back-off,
    failure count and cool-down from one shard to the next."""

    def __init__(
        self, hosts: Sequence[str], opts: PolitenessOptions, clock: Callable[[], float] = time.monotonic,
        book: HostBook | None = None,
    ) -> None:
        self.opts, self.clock, self.stats = opts, clock, PolitenessStats()
        self._hosts: HostBook = {} if book is None else book
        for host in self._hosts.values():  # (a previous shard's scheduler is done with them)
            host.pending, host.active = deque(), 0
        for row, name in enumerate(hosts):
            self._hosts.setdefault(name, _Host(name, deque())).pending.append(row)
        self._left = len(hosts)
        self._ready: list[tuple[int, str]] = []  # (head row, host): may start now (entries checked when popped)
        self._waiting: list[tuple[float, str]] = []  # (not_before, host): held back until then
        self._cond = threading.Condition()
        now = clock()
        for host in self._hosts.values():
            self._place(host, now)

    def _has_slot(self, host: _Host) -> bool:
        return self.opts.max_connections_per_host == 0 or host.active < self.opts.max_connections_per_host

    def _place(self, host: _Host, now: float) -> None:
        if not host.pending:
            return
        if host.cooled_because or (self._has_slot(host) and host.not_before <= now):
            heapq.heappush(self._ready, (host.pending[0], host.name))
        elif self._has_slot(host):
            heapq.heappush(self._waiting, (host.not_before, host.name))
        # else: no free connection; finish() places it again

    def _pop_ready(self, now: float) -> Ticket | None:
        while self._waiting and self._waiting[0][0] <= now:
            self._place(self._hosts[heapq.heappop(self._waiting)[1]], now)
        while self._ready:
            head, name = heapq.heappop(self._ready)
            host = self._hosts[name]
            if not host.pending or host.pending[0] != head:
                continue  # stale entry
            if host.cooled_because:
                host.pending.popleft()
                self._place(host, now)
                self.stats.cooled_rows += 1
                return Ticket(head, name, f"host {name or '(none)'} in cool-down: {host.cooled_because}")
            if not self._has_slot(host):
                continue  # finish() places it again
            if host.not_before > now:
                heapq.heappush(self._waiting, (host.not_before, name))
                continue
            host.pending.popleft()
            host.active += 1
            self.stats.max_active[name] = max(self.stats.max_active.get(name, 0), host.active)
            host.not_before = max(host.not_before, now + self.opts.min_interval_per_host_s)
            self._place(host, now)
            return Ticket(head, name)
        return None

    @property
    def left(self) -> int:
        """Rows not handed out yet."""
        return self._left

    def _hand_out(self, now: float) -> Ticket | None:
        ticket = self._pop_ready(now)
        if ticket is not None:
            self._left -= 1
            if not self._left:
                self._cond.notify_all()  # the other workers may stop waiting
        return ticket

    def try_take(self) -> Ticket | None:
        """The next row that may start now, or None (none may, or none is left); never blocks."""
        with self._cond:
            return self._hand_out(self.clock()) if self._left else None

    def take(self) -> Ticket | None:
        """The next row, once one may start; None when every row has been handed out."""
        with self._cond:
            while self._left:
                now = self.clock()
                ticket = self._hand_out(now)
                if ticket is not None:
                    if self._ready:  # maybe more may start now (e.g. a back-off just ended): pass the word on
                        self._cond.notify()
                    return ticket
                timeout = max(0.0, self._waiting[0][0] - now) if self._waiting else None
                self._cond.wait(timeout)
                self.stats.waited_s += self.clock() - now
            return None

    def finish(self, ticket: Ticket, signal: Signal, detail: str = "", retry_after: float | None = None) -> None:
        opts = self.opts
        with self._cond:
            host, now = self._hosts[ticket.host], self.clock()
            host.active -= 1
            if signal is Signal.OK:
                host.failures = host.level = 0
            elif signal in (Signal.THROTTLED, Signal.FAILED):
                host.failures += 1
                cool = 0 < opts.failures_before_cooldown <= host.failures
                if signal is Signal.THROTTLED:
                    self.stats.throttled += 1
                    asked = retry_after or 0.0
                    delay = min(opts.backoff_max_s, max(asked, opts.backoff_initial_s * 2.0**host.level))
                    host.level = min(host.level + 1, 64)  # (2.0**1100 overflows; the cap is reached long before)
                    if asked > opts.backoff_max_s and opts.failures_before_cooldown:
                        cool = True  # it asks for longer than we back off: a rerun fetches these rows
                    if host.not_before < now + delay:
                        self.stats.backoff_s += now + delay - max(host.not_before, now)
                        host.not_before = now + delay
                if cool and not host.cooled_because:
                    self._cond.notify_all()  # every remaining row of the host may go at once
                    host.cooled_because = f"{host.failures} consecutive failures, last: {detail}"
                    self.stats.cooldowns += 1
            self._place(host, now)
            self._cond.notify()  # one slot freed: one more row may start (waking all would stampede)
