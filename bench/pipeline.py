"""How the whole pipeline scales: the embedded sample at several sizes, every stage measured.

Each size runs in a fresh process (its own Spark JVM, so driver memory is per size): the sample at
``--pages`` pages (distinct images grow with it: pages // 2, at least 150), its images served on loopback,
tiny random-weight models, ``local[N]``. Every image is drawn once, up front, into ``--image-cache`` (kept
between runs) by ``--cores`` processes, so the timed download stage fetches and filters, not draws. A sampler thread polls /proc every 0.2 s for the peak RSS of
the driver (this Python process + its JVM) and of the Python workers, per stage. Printed per stage and
size: rows in/out, wall seconds, rows/s per core, peak RSS, and the cost per input row (wall / rows_in)
relative to the smallest size. No wall-clock target is asserted anywhere; the README keeps the table.

    python bench/pipeline.py --pages 300 3000 30000 [--cores 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (the JVM starts the Python workers from other threads)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def _rss_and_cmd(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        return rss, cmd
    except OSError:
        return 0, ""


class Sampler:
    """Peak RSS of the driver (this process + its JVM) and of the Python workers (all together), per stage."""

    def __init__(self) -> None:
        self.peaks = {"driver": 0, "workers": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            driver, workers = _rss_and_cmd(me)[0], 0
            todo = _children(me)
            while todo:
                pid = todo.pop()
                rss, cmd = _rss_and_cmd(pid)
                if "java" in cmd.split(" ", 1)[0]:
                    driver += rss
                elif "pyspark" in cmd or "python" in cmd:
                    workers += rss
                todo += _children(pid)
            self.peaks["driver"] = max(self.peaks["driver"], driver)
            self.peaks["workers"] = max(self.peaks["workers"], workers)

    def reset(self) -> None:
        self.peaks = {"driver": 0, "workers": 0}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class Observer:
    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.rows, self._t0 = sampler, {}, 0.0

    def start(self, name: str) -> None:
        self.sampler.reset()
        self._t0 = time.perf_counter()

    def end(self, name: str, stats: dict) -> None:
        self.rows[name] = {
            "rows_in": stats["rows_in"],
            "rows_out": stats["rows_out"],
            "seconds": round(time.perf_counter() - self._t0, 2),
            "driver_rss_mb": round(self.sampler.peaks["driver"] / 2**20),
            "workers_rss_mb": round(self.sampler.peaks["workers"] / 2**20),
        }


def draw_images(pages: int, cache: str, cores: int) -> None:
    """Every image the largest sample links to, drawn into ``cache`` up front by ``cores`` processes (kept
    between runs), so the timed download stage measures fetching and filtering, not drawing test images."""
    sys.path.insert(0, str(REPO))
    from curation.sample.images import draw_images as draw, sample_name
    from curation.sample.crawl_files import image_count

    started = time.perf_counter()
    names = [sample_name(i) for i in range(image_count(pages))]
    drawn = draw(cache, names, processes=cores, progress=lambda done, total: print(
        f"  drawn {done:,} / {total:,} images, {time.perf_counter() - started:.0f} s", flush=True))
    if drawn:
        print(f"drew {drawn:,} sample images into {cache} in {time.perf_counter() - started:.0f} s", flush=True)


def run_one(pages: int, cores: int, folder: str, cache: str) -> dict:
    """One size, in this process: the sample pipeline with its stages observed."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.path.insert(0, str(REPO))
    import socket

    from jobs.stages.config import load_config
    from jobs import pipeline
    from jobs.session import build_spark_session

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(
        str(REPO / "configs" / "sample.toml"),
        {
            "pipeline": {"run_root": folder, "sample_pages": pages, "sample_image_port": port,
                         "sample_image_cache": cache},
            "annotate": {"random_models": os.path.join(folder, "models"), "rows_per_shard": 2_000},
            "spark": {"master": f"local[{cores}]"},
            "extract": {"rows_per_shard": 50_000},
            "download": {"rows_per_shard": 1_000},
        },
    )
    spark = build_spark_session(cfg.spark.master, "bench-pipeline", dict(cfg.spark.conf))
    with Sampler() as sampler:
        observer = Observer(sampler)
        started = time.perf_counter()
        pipeline.run(spark, cfg, observer=observer)
        total = time.perf_counter() - started
    spark.stop()
    return {"pages": pages, "cores": cores, "seconds": round(total, 1), "stages": observer.rows}


def table(results: list[dict]) -> str:
    base = results[0]
    lines = ["| stage | pages | rows in | rows out | wall s | rows/s/core | cost/row vs smallest | driver peak MB | workers peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in base["stages"]:
        b = base["stages"][name]
        base_cost = b["seconds"] / max(1, b["rows_in"])
        for r in results:
            s = r["stages"][name]
            cost = s["seconds"] / max(1, s["rows_in"])
            lines.append(
                f"| {name} | {r['pages']:,} | {s['rows_in']:,} | {s['rows_out']:,} | {s['seconds']} | "
                f"{s['rows_in'] / max(s['seconds'], 1e-9) / r['cores']:,.1f} | {cost / base_cost:.2f} | "
                f"{s['driver_rss_mb']:,} | {s['workers_rss_mb']:,} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, nargs="+", default=[300, 3000, 30000])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--image-cache", default=str(REPO / "bench" / "out" / "images"),
                        help="folder the sample images are drawn into once and served from (default: %(default)s)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.cores, args.folder, args.image_cache)))
        return
    draw_images(max(args.pages), args.image_cache, args.cores)
    results = []
    for pages in args.pages:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
            done = subprocess.run(
                [sys.executable, __file__, "--one", str(pages), "--cores", str(args.cores), "--folder", folder,
                 "--image-cache", args.image_cache],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                sys.exit(f"pipeline at {pages} pages failed:\n{done.stderr[-4000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{pages:,} pages: {results[-1]['seconds']} s", flush=True)
    print(table(results))
    ratios = []
    if len(results) >= 2:
        last, prev = results[-1], results[-2]
        for name in last["stages"]:
            a, b = last["stages"][name], prev["stages"][name]
            growth = (a["seconds"] / max(1, a["rows_in"])) / (b["seconds"] / max(1, b["rows_in"]))
            ratios.append(f"{name} {growth:.2f}")
        driver = max(s["driver_rss_mb"] for s in last["stages"].values()) / max(
            1, max(s["driver_rss_mb"] for s in results[0]["stages"].values()))
        print(f"cost per row {last['pages']:,} vs {prev['pages']:,} pages: " + ", ".join(ratios))
        print(f"driver peak RSS {last['pages']:,} vs {results[0]['pages']:,} pages: {driver:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
