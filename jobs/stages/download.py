"""The download stage's unit of work, engine-agnostic: one task runs one lane of shards, each a set of input rows.

Input: the kept rows of a finished filter-text stage (TEXT_OK). With host-aware sharding (the default,
``[download.politeness] tasks_per_host`` > 0) every row of input file ``i`` goes to a lane by its host
(curation/fetch/politeness.py: one host's rows fall in at most ``tasks_per_host`` lanes); the rows of file ``i``
in lane ``L``, in input order, are cut into shards ``part-iiiii-LLLLL-kkkk`` of at most ``rows_per_shard``
rows, and one task runs a lane's shards one after another, so at most ``tasks_per_host`` tasks fetch from
one host at a time. (With ``tasks_per_host = 0``, slice ``k`` of ``rows_per_shard`` rows of file ``i``
becomes shard ``part-iiiii-kkkkk``, each its own task.) Shard names and contents depend only on the
input and the config, not on the engine (Spark ``mapInArrow`` or the local process pool below) or on
the partitioning. A shard fetches its rows with a pool of threads that take rows from a
:class:`~curation.fetch.politeness.HostScheduler` (per-host connection limit, spacing, back-off, cool-down)
through the SSRF-guarded opener of curation/fetch/ssrf.py (one per shard), applies filters/image.py to each
body, and writes

- ``data/<shard>.parquet``: the kept rows in input order, every input column followed by the fetch
  columns of the FETCHED table (``status`` = "success", original ``width``/``height``, the resized
  ``image_bytes``, ``image_format``, ``bytes_original``, and the ``sha256`` and ``md5`` of the original
  bytes, hashed while they streamed in);
- ``rejected/<shard>.parquet``: the other rows with their Reason and a detail naming the HTTP status or
  the error; details of transient failures start with ``transient: ``.

Why not img2dataset's ``Downloader``: it writes its own shard formats with its own statuses
("failed_to_download" / "failed_to_resize" with free-text errors), decodes with OpenCV (no Pillow bomb
guard, no EXIF orientation), reads arrow files from fsspec and deletes its input shard; our stage needs a
Reason per row, the atomic shard contract of curation/stage.py and resumable markers. So the task does
per row what img2dataset does (curation/fetch/http.py says why its code is not imported) and keeps its model
of work: one thread pool per shard, shards spread over processes (local) or Spark tasks (cluster).

Safety hash lists (``[[safety.lists]]``, jobs/stages/safety.py) are applied at the earliest point each can
be: a shard's URLs are checked against the URL lists before any of them is requested (a listed URL is never
fetched), and a body against the image lists as soon as it has arrived, before it is decoded, resized or
stored; a match is rejected ``blocklisted_url`` / ``blocklisted_image`` with the list's name and kind as
detail, and the matched bytes are dropped.

A rerun redoes missing shards and, with ``retry_transient``, only the transient rows of finished shards
(their count is in the shard marker, so the driver knows which shards to revisit without reading data).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from jobs.stages.config import DownloadOptions
from curation.fetch.http import CONTENT_DIGESTS, RETRY_AFTER_STATUS, TRANSIENT, FetchFailed, fetch_body, is_transient
from curation.fetch.politeness import HostBook, HostScheduler, Lanes, PolitenessOptions, PolitenessStats, Signal, host_of
from curation.fetch.ssrf import AddressGuard, build_opener
from curation.stage import (
    DATA, REJECTED_DIR, SHARDS, InputsChangedError, ShardStats, StageDir, read_parquet, rejected_table,
)
from curation.storage import StorageOptions
from filters.image import StoredImage, process_image
from filters.safety import SafetyOptions
from jobs.stages.safety import Screen, load_screen
from schemas import CANDIDATES, DETAIL, FETCHED, TEXT_OK, UID, Reason, Rejection

log = logging.getLogger(__name__)

STAGE = "download"
FETCH_COLUMNS = [n for n in FETCHED.names if n not in TEXT_OK.names]
STATUS_SUCCESS = "success"  # the status of every kept row
NO_LISTS = SafetyOptions()


@dataclass(frozen=True)
class FetchedImage(StoredImage):
    """A kept image with the content hashes of its original bytes (hex)."""

    sha256: str = ""
    md5: str = ""


@dataclass(frozen=True)
class WorkItem:
    """Rows ``start:stop`` of input file ``uri`` (only those listed in ``rows``, when given), written as
    output shard ``shard``. Items of one ``lane`` run one after another in one task."""

    uri: str
    start: int
    stop: int
    shard: str
    lane: int = 0
    rows: tuple[int, ...] = ()  # row numbers in the file, ascending; empty: all of start:stop

    @property
    def n_rows(self) -> int:
        return len(self.rows) if self.rows else self.stop - self.start


def plan_slices(files: list[str], counts: list[int], rows_per_shard: int) -> list[WorkItem]:
    """Slice ``k`` of file ``i`` -> shard ``part-iiiii-kkkkk``, each in a lane of its own."""
    items = []
    for index, (uri, n_rows) in enumerate(zip(files, counts)):
        for k, start in enumerate(range(0, n_rows, rows_per_shard)):
            shard = f"part-{index:05d}-{k:05d}"
            items.append(WorkItem(uri, start, min(start + rows_per_shard, n_rows), shard, lane=len(items)))
    return items


def auto_lanes(counts: list[int], rows_per_shard: int) -> int:
    """The default number of lanes: as many as the largest input file has slices (one shard per file
    and lane when the hosts spread evenly)."""
    return max([1] + [math.ceil(n / rows_per_shard) for n in counts])


def plan_host_shards(files: list[str], urls: list[list[str]], rows_per_shard: int, lanes: int, tasks_per_host: int) -> list[WorkItem]:
    """Host-aware shards: the rows of file ``i`` in lane ``L`` (input order), ``rows_per_shard`` at a time,
    as shard ``part-iiiii-LLLLL-kkkk`` in lane ``L``. A pure function of the URLs and the three numbers."""
    lane_of_url = Lanes(lanes, tasks_per_host)
    return [item for index, (uri, file_urls) in enumerate(zip(files, urls))
            for item in _file_shards(index, uri, file_urls, rows_per_shard, lane_of_url)]


def _file_shards(index: int, uri: str, urls: Iterable[str], rows_per_shard: int, lane_of_url: Lanes) -> list[WorkItem]:
    by_lane: dict[int, list[int]] = {}
    for row, url in enumerate(urls):
        by_lane.setdefault(lane_of_url(url), []).append(row)
    items = []
    for lane in sorted(by_lane):
        rows = by_lane[lane]
        for k, first in enumerate(range(0, len(rows), rows_per_shard)):
            chunk = tuple(rows[first : first + rows_per_shard])
            items.append(WorkItem(uri, chunk[0], chunk[-1] + 1, f"part-{index:05d}-{lane:05d}-{k:04d}", lane, chunk))
    return items


def _read_column(uri: str, column: str, options: StorageOptions | None) -> list:
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        return pq.ParquetFile(fh).read(columns=[column]).column(column).to_pylist()


def _num_rows(uri: str, options: StorageOptions | None) -> int:
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def plan_work(
    files: list[str], rows_per_shard: int, options: StorageOptions | None = None, politeness: PolitenessOptions | None = None
) -> list[WorkItem]:
    """The stage's shards: host-aware when ``politeness.tasks_per_host`` > 0 (reads the input's url
    column on the driver), else slices of the input files (reads only their metadata)."""
    counts = [_num_rows(uri, options) for uri in files]
    if politeness is None or politeness.tasks_per_host == 0:
        return plan_slices(files, counts, rows_per_shard)
    lane_of_url = Lanes(politeness.lanes or auto_lanes(counts, rows_per_shard), politeness.tasks_per_host)
    # one file's urls in memory at a time; the same items as plan_host_shards over all files
    return [item for index, uri in enumerate(files)
            for item in _file_shards(index, uri, _read_column(uri, "url", options), rows_per_shard, lane_of_url)]


class PlanChangedError(InputsChangedError):
    pass


def check_plan(stage: StageDir, items: list[WorkItem]) -> None:
    """Refuse to resume an output folder whose finished shards another plan made (other ``rows_per_shard``,
    ``lanes`` or ``tasks_per_host``, or a version without host lanes): their rows would be counted twice."""
    foreign = sorted(set(stage.completed_shards()) - {i.shard for i in items})
    if foreign:
        raise PlanChangedError(
            f"{stage.uri} holds {len(foreign)} finished shard(s) this plan does not make (e.g. {foreign[0]}): it was "
            "started with another shard plan ([download] rows_per_shard, [download.politeness] lanes or "
            "tasks_per_host); rerun with the same settings to resume, or pass --overwrite to start again"
        )


def by_lane(items: Iterable[WorkItem]) -> list[list[WorkItem]]:
    """The items grouped by lane (a task's work), lanes and items in plan order."""
    lanes: dict[int, list[WorkItem]] = {}
    for item in items:
        lanes.setdefault(item.lane, []).append(item)
    return list(lanes.values())


def read_rows(item: WorkItem, options: StorageOptions | None = None) -> pa.Table:
    """The item's rows, reading only the row groups that hold them."""
    fs, path = storage.filesystem(item.uri, options)
    with fs.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        groups, first, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < item.stop and offset + n > item.start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        if not groups:
            return pf.schema_arrow.empty_table()
        table = pf.read_row_groups(groups)
        if item.rows:
            table = table.take(pa.array([r - first for r in item.rows], pa.int64()))
        else:
            table = table.slice(item.start - first, item.stop - item.start)
    CANDIDATES.conform(table)  # a clear error when a required column is missing
    return table


def host_signal(failure: FetchFailed) -> Signal:
    """What a failed fetch says about its host (curation/fetch/politeness.py acts on it)."""
    if failure.reason == Reason.BLOCKED_ADDRESS:
        return Signal.NONE
    if failure.status in RETRY_AFTER_STATUS:
        return Signal.THROTTLED
    return Signal.FAILED if failure.transient or failure.unreachable else Signal.OK


def fetch_and_check(
    url: str, opener, opts: DownloadOptions, screen: Screen | None = None
) -> tuple[FetchedImage | Rejection, FetchFailed | None]:
    """The row's result, and the fetch failure behind it (None: the host sent a body). The body is
    checked against the image lists before the image rules decode it."""
    extra = tuple(a for a in (screen.image_algorithms if screen else ()) if a not in CONTENT_DIGESTS)
    try:
        body = fetch_body(url, opener, opts.fetch, opts.rules.max_bytes, CONTENT_DIGESTS + extra)
    except FetchFailed as e:
        return e.rejection, e
    blocked = screen.check_image(body.data, body.digests) if screen else None
    if blocked is not None:
        return blocked, None  # the body goes no further
    image = process_image(body.data, opts.rules)
    if isinstance(image, Rejection):
        return image, None
    own = {f: getattr(image, f) for f in StoredImage.__dataclass_fields__}
    return FetchedImage(**own, sha256=body.hexdigest("sha256"), md5=body.hexdigest("md5")), None


class _Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started, self.every = time.monotonic(), max(500, total // 10)
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            if self.done % self.every == 0 or self.done == self.total:
                rate = self.done / max(1e-9, time.monotonic() - self.started)
                log.info("download %s: %d/%d rows, %.1f rows/s", self.label, self.done, self.total, rate)


def fetch_rows(
    urls: list[str], opts: DownloadOptions, label: str = "", book: HostBook | None = None, screen: Screen | None = None
) -> tuple[list[FetchedImage | Rejection], PolitenessStats]:
    """Every URL's result (in order), fetched by ``opts.threads`` threads under the politeness rules
    (``book``: the task's host states, carried over from its previous shards). URLs on a list of
    ``screen`` are rejected here and never requested."""
    opener = build_opener(
        AddressGuard.from_config(opts.fetch.allowed_addresses, opts.fetch.only_allowed_addresses),
        opts.fetch.max_redirects,
    )
    results: list[FetchedImage | Rejection | None] = list(screen.check_urls(urls)) if screen else [None] * len(urls)
    todo = [i for i, r in enumerate(results) if r is None]  # the rows to fetch (scheduler rows index this)
    scheduler = HostScheduler([host_of(urls[i]) for i in todo], opts.politeness, book=book)
    progress = _Progress(label, len(todo))

    def work() -> None:
        while (ticket := scheduler.take()) is not None:
            row = todo[ticket.row]
            if ticket.cooled is not None:
                results[row] = Rejection(Reason.FAILED_TO_DOWNLOAD, TRANSIENT + ticket.cooled)
            else:
                signal, detail, wait = Signal.NONE, "", None
                try:
                    result, failure = fetch_and_check(urls[row], opener, opts, screen)
                    if failure is not None:
                        signal, detail, wait = host_signal(failure), failure.detail, failure.retry_after
                    else:
                        signal = Signal.OK
                    results[row] = result
                finally:  # the connection slot is given back even if the row raised
                    scheduler.finish(ticket, signal, detail, wait)
            progress.step()

    workers = min(opts.threads, max(1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work) for _ in range(workers)]:
            future.result()
    return results, scheduler.stats  # type: ignore[return-value]


def _fetch_columns(images: list[FetchedImage]) -> dict[str, pa.Array]:
    schema = FETCHED.arrow_schema()
    values = {
        "status": [STATUS_SUCCESS] * len(images),
        "error_message": [None] * len(images),
        "width": [i.width for i in images],
        "height": [i.height for i in images],
        "image_bytes": [i.image_bytes for i in images],
        "image_format": [i.image_format for i in images],
        "bytes_original": [i.bytes_original for i in images],
        "sha256": [i.sha256 for i in images],
        "md5": [i.md5 for i in images],
    }
    return {name: pa.array(values[name], schema.field(name).type) for name in FETCH_COLUMNS}


def download_table(
    rows: pa.Table, opts: DownloadOptions, label: str = "", politeness: PolitenessStats | None = None,
    book: HostBook | None = None, screen: Screen | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Fetch and check every row: (kept rows with the fetch columns, REJECTED rows), both in input order.
    The politeness figures of the fetch are added to ``politeness`` when given."""
    urls, uids = rows.column("url").to_pylist(), rows.column(UID).to_pylist()
    results, stats = fetch_rows(urls, opts, label, book, screen)
    if politeness is not None:
        _add_stats(politeness, stats)
    kept_idx = [i for i, r in enumerate(results) if isinstance(r, FetchedImage)]
    kept = rows.take(pa.array(kept_idx, pa.int64()))
    for name, column in _fetch_columns([results[i] for i in kept_idx]).items():
        kept = kept.append_column(FETCHED.arrow_schema().field(name), column)
    rejected = rejected_table(
        [r.row(uids[i]) for i, r in enumerate(results) if isinstance(r, Rejection)],
        STAGE,
    )
    return kept, rejected


def _add_stats(total: PolitenessStats, part: PolitenessStats) -> None:
    total.backoff_s += part.backoff_s
    total.waited_s += part.waited_s
    total.throttled += part.throttled
    total.cooled_rows += part.cooled_rows
    total.cooldowns += part.cooldowns
    for host, n in part.max_active.items():
        total.max_active[host] = max(total.max_active.get(host, 0), n)


def count_transient(rejected: pa.Table) -> int:
    return sum(is_transient(d) for d in rejected.column(DETAIL).to_pylist())


def _marker(stage: StageDir, shard: str) -> ShardStats:
    return ShardStats.from_json(storage.read_bytes(stage.path(SHARDS, f"{shard}.json"), stage.storage).decode())


def _without(table: pa.Table, uids: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column(UID), uids)))


def _in_input_order(table: pa.Table, position: dict[str, int]) -> pa.Table:
    order = pa.array([position[u] for u in table.column(UID).to_pylist()], pa.int64())
    return table.take(pc.sort_indices(order))


def _write(
    stage: StageDir, item: WorkItem, rows_in: int, kept: pa.Table, rejected: pa.Table, retried: int, polite: PolitenessStats
) -> ShardStats:
    extra = {"file": item.uri, "start": item.start, "stop": item.stop, "transient": count_transient(rejected)}
    extra["politeness"] = polite.as_extra()
    if retried:
        extra["retried"] = retried
    return stage.write_shard(item.shard, kept, rejected, rows_in=rows_in, extra=extra)


def _screen(safety: SafetyOptions, stage: StageDir) -> Screen | None:
    return load_screen(safety, stage.storage) if safety.lists else None


def retry_transient_rows(stage: StageDir, item: WorkItem, opts: DownloadOptions, safety: SafetyOptions = NO_LISTS) -> ShardStats:
    """Refetch only the rows of a finished shard whose failure was transient; rewrite the shard.

    Idempotent: rows being retried are dropped from both old files before the new results join them,
    so a retry interrupted between the two renames leaves a shard the next retry repairs."""
    rows = read_rows(item, stage.storage)
    old_kept = read_parquet(stage.path(DATA, f"{item.shard}.parquet"), stage.storage)
    old_rejected = read_parquet(stage.path(REJECTED_DIR, f"{item.shard}.parquet"), stage.storage)
    flags = [is_transient(d) for d in old_rejected.column(DETAIL).to_pylist()]
    retry = pa.array(sorted(u for u, f in zip(old_rejected.column(UID).to_pylist(), flags) if f), pa.string())
    redo = rows.filter(pc.is_in(rows.column(UID), retry))
    polite = PolitenessStats()
    new_kept, new_rejected = download_table(redo, opts, f"{item.shard} (retry)", polite, screen=_screen(safety, stage))
    position = {u: i for i, u in enumerate(rows.column(UID).to_pylist())}
    kept = _in_input_order(pa.concat_tables([_without(old_kept, retry), new_kept.cast(old_kept.schema)]), position)
    rejected = _in_input_order(pa.concat_tables([_without(old_rejected, retry), new_rejected]), position)
    log.info("download %s: retried %d transient rows, %d now kept", item.shard, len(retry), new_kept.num_rows)
    return _write(stage, item, rows.num_rows, kept, rejected, len(retry), polite)


def download_task(
    item: WorkItem, stage: StageDir, opts: DownloadOptions, book: HostBook | None = None, safety: SafetyOptions = NO_LISTS
) -> ShardStats:
    """Fetch one slice into its shard; a finished shard is skipped, or has its transient rows retried."""
    if stage.has_shard(item.shard):
        if opts.retry_transient and _marker(stage, item.shard).extra.get("transient"):
            return retry_transient_rows(stage, item, opts, safety)
        return ShardStats(item.shard, 0, 0, extra={"skipped": True})
    rows = read_rows(item, stage.storage)
    polite = PolitenessStats()
    kept, rejected = download_table(rows, opts, item.shard, polite, book, _screen(safety, stage))
    return _write(stage, item, rows.num_rows, kept, rejected, 0, polite)


def download_lane(
    items: list[WorkItem], stage: StageDir, opts: DownloadOptions, safety: SafetyOptions = NO_LISTS
) -> list[ShardStats]:
    """One task: a lane's shards, one after another (so a host's lanes bound the tasks reaching it),
    each host's back-off and cool-down carried from shard to shard."""
    book: HostBook = {}
    return [download_task(item, stage, opts, book, safety) for item in items]


def pending_transient(stage: StageDir) -> int:
    """Rows of finished shards that failed with a transient error (what a rerun would retry)."""
    return sum(s.extra.get("transient", 0) for s in stage.completed_shards().values())


def run_local(
    stage: StageDir, items: Iterable[WorkItem], opts: DownloadOptions, safety: SafetyOptions = NO_LISTS
) -> list[ShardStats]:
    """The local engine: the same tasks (one per lane), in a pool of spawned processes (in this process for
    one); the largest lanes start first, so that no large lane is left to run alone at the end."""
    lanes = sorted(by_lane(items), key=lambda lane: -sum(i.n_rows for i in lane))
    task = partial(download_lane, stage=stage, opts=opts, safety=safety)
    processes = min(opts.processes or os.cpu_count() or 1, max(1, len(lanes)))
    if processes == 1:
        return [stats for lane in lanes for stats in task(lane)]
    done: list[ShardStats] = []
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for stats in pool.imap_unordered(task, lanes):
            done.extend(stats)
            log.info("download: %d/%d shards done", len(done), sum(map(len, lanes)))
    return done
