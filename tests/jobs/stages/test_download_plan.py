"""The download stage's host-aware plan (jobs/stages/download.py: plan_work) against explicit lane assignments:
a host's rows fall in at most ``tasks_per_host`` lanes, shards cut per file and lane in input order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from curation.fetch.politeness import PolitenessOptions
from jobs.stages.download import WorkItem, by_lane, plan_work

NAMES = ["cat.jpg", "dog.png", "sunset-over-hills.jpg", "a/b/c.webp", "x1.gif", "photo?id=17", "banner.jpg", "logo.svg"]
# rows alternate alpha, beta: alpha's rows 0, 2, ..., 14 and beta's rows 1, 3, ..., 15
URLS = [f"http://{host}.example/{name}" for name in NAMES for host in ("alpha", "beta")]


def _files(tmp_path, *columns: list[str]) -> list[str]:
    files = []
    for i, urls in enumerate(columns):
        path = tmp_path / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"url": urls}), path)
        files.append(str(path))
    return files


def _item(uri: str, index: int, lane: int, k: int, rows: tuple[int, ...]) -> WorkItem:
    return WorkItem(uri, rows[0], rows[-1] + 1, f"part-{index:05d}-{lane:05d}-{k:04d}", lane, rows)


def test_with_two_tasks_per_host_each_host_spreads_over_exactly_two_lanes(tmp_path):
    # lane = (crc32(host) + crc32(url) % 2) % 8: alpha.example in lanes 5 and 6, beta.example in lanes 2 and 3
    first, second = _files(tmp_path, URLS, ["http://beta.example/cat.jpg", "http://alpha.example/cat.jpg"])
    items = plan_work([first, second], 3, politeness=PolitenessOptions(tasks_per_host=2, lanes=8))
    assert items == [
        _item(first, 0, 2, 0, (1, 5, 7)),
        _item(first, 0, 2, 1, (9, 13, 15)),
        _item(first, 0, 3, 0, (3, 11)),
        _item(first, 0, 5, 0, (0, 4, 6)),
        _item(first, 0, 5, 1, (10, 12)),
        _item(first, 0, 6, 0, (2, 8, 14)),
        _item(second, 1, 2, 0, (0,)),
        _item(second, 1, 5, 0, (1,)),
    ]
    assert [[i.shard for i in lane] for lane in by_lane(items)] == [
        ["part-00000-00002-0000", "part-00000-00002-0001", "part-00001-00002-0000"],
        ["part-00000-00003-0000"],
        ["part-00000-00005-0000", "part-00000-00005-0001", "part-00001-00005-0000"],
        ["part-00000-00006-0000"],
    ]


def test_with_one_task_per_host_each_host_keeps_one_lane(tmp_path):
    (only,) = _files(tmp_path, URLS)
    items = plan_work([only], 8, politeness=PolitenessOptions(tasks_per_host=1, lanes=8))
    assert items == [_item(only, 0, 2, 0, tuple(range(1, 16, 2))), _item(only, 0, 5, 0, tuple(range(0, 16, 2)))]


def test_without_host_aware_sharding_the_plan_slices_each_file(tmp_path):
    (only,) = _files(tmp_path, URLS)
    items = plan_work([only], 6, politeness=PolitenessOptions(tasks_per_host=0, lanes=8))
    assert [(i.start, i.stop, i.shard, i.lane, i.rows) for i in items] == [
        (0, 6, "part-00000-00000", 0, ()), (6, 12, "part-00000-00001", 1, ()), (12, 16, "part-00000-00002", 2, ())]
