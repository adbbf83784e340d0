"""Throughput of the download stage against bare img2dataset, on the same loopback URLs, in one run.

A separate process serves the embedded sample's 150 generated JPEGs (curation/sample/images.py: 150 to
1600 px, ~150 KB on average, with panoramas, tiny and small-side files) on 127.0.0.1; ``--urls`` distinct
URLs (``/images/img-NNNNN.jpg?n=k``) point at them. Both systems get the same URLs, processes, threads and
shard size, and the same resize (keep ratio, shorter side 384, never upscaled, JPEG):

- img2dataset 1.47.0 ``download()``, multiprocessing distributor, parquet output, its defaults otherwise
  (EXIF extraction, sha256), plus its own versions of the size rules (min side 200, aspect 3);
- our stage with the local engine (``jobs/download.py``, ``engine = "local"``): SSRF guard, X-Robots-Tag
  check, bounded reads, Pillow decoding with the bomb guard and EXIF orientation, all of COYO's rules.

Rate = input URLs per wall-clock second (every URL ends as a kept or a rejected row in both). The systems
run alternately ``--repeat`` times and the best run of each counts (the machine is shared).

    python bench/download.py [--urls 3000] [--processes 2] [--threads 32] [--repeat 2] [--json out.json] [--check]

``--check`` exits 1 when ours is under 0.9x img2dataset.

``--hosts`` measures politeness instead (no img2dataset): ``--n-hosts`` servers on 127.0.0.2, 127.0.0.3 ...
each serve the sample's images after ``--latency-ms`` (a remote host's time to first byte, so that the
fetch is bound by latency as a crawl is, not by this machine's CPU) and count the connections they serve
at once. Two cases:

- *uniform*: the URLs spread evenly over the hosts; today's code (``--reference``, a git revision whose
  tree is exported to a temporary folder and run in a subprocess) against ours with the default
  politeness and with ``max_connections_per_host = 2`` (target: ours >= 0.95x today's URLs/s);
- *skewed*: hosts drawn from a Zipf law (exponent ``--zipf``); the largest host answers 429
  (``Retry-After: 1``) to any connection beyond ``--host-limit`` served at once, as a rate-limiting CDN
  does. Today's code against ours with ``max_connections_per_host = 2``, ``tasks_per_host = 2``.

Each line reports URLs/s, rows kept, transient failures left for a rerun, the most connections the
largest host's server saw at once, the back-off our scheduler imposed (host-seconds) and the time its
threads waited for a host (thread-seconds). Every arm runs in its own subprocess, alternately, best of
``--repeat``.

    python bench/download.py --hosts [--urls 3000] [--n-hosts 32] [--reference b29e4a7] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations: no PyPI query

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.stages.config import Config, DownloadOptions
from curation.fetch.http import FetchOptions
from curation.sample.images import N_SAMPLE_IMAGES, ImageServer, sample_name, sample_routes
from curation.stage import StageDir, rejected_table
from schemas import TEXT_OK

TARGET_RATIO = 0.9


def _serve(ready: multiprocessing.Queue) -> None:
    with ImageServer(sample_routes()) as server:
        ready.put(server.port)
        while True:
            time.sleep(3600)


def _urls(port: int, n: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/images/{sample_name(i % N_SAMPLE_IMAGES)}?n={i}" for i in range(n)]


def _text_ok_stage(root: Path, urls: list[str], rows_per_file: int) -> str:
    stage = StageDir(str(root), "filter_text")
    stage.prepare()
    rows = [{"uid": f"{i:032x}", "url": u, "text": f"sample image {i}", "page_url": None, "source_file": "bench",
             "text_original": None} for i, u in enumerate(urls)]
    for k, start in enumerate(range(0, len(rows), rows_per_file)):
        part = TEXT_OK.from_pylist(rows[start : start + rows_per_file])
        stage.write_shard(f"part-b{k:05d}", part, rejected_table([], "filter_text"), part.num_rows)
    stage.finalize({}, time.time())
    return str(root)


def run_img2dataset(urls: list[str], work: Path, processes: int, threads: int, shard: int) -> tuple[float, int]:
    from img2dataset import download

    src, out = work / "img2dataset-input.parquet", work / "img2dataset-out"
    pq.write_table(pa.table({"url": urls, "text": [f"sample image {i}" for i in range(len(urls))]}), src)
    started = time.perf_counter()
    download(
        url_list=str(src), input_format="parquet", url_col="url", caption_col="text", output_format="parquet",
        output_folder=str(out), processes_count=processes, thread_count=threads, number_sample_per_shard=shard,
        image_size=384, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_format="jpg", encode_quality=90,
        min_image_size=200, max_aspect_ratio=3.0, timeout=10, retries=0, distributor="multiprocessing",
    )
    elapsed = time.perf_counter() - started
    ok = sum(pq.read_table(f, columns=["status"]).column("status").to_pylist().count("success") for f in out.glob("*.parquet"))
    shutil.rmtree(out)
    return elapsed, ok


def run_ours(urls: list[str], work: Path, processes: int, threads: int, shard: int) -> tuple[float, int]:
    from jobs import download as job

    source = _text_ok_stage(work / "text_ok", urls, rows_per_file=len(urls))
    opts = DownloadOptions(fetch=FetchOptions(timeout_s=10, allowed_addresses=("127.0.0.1",)), threads=threads,
                           rows_per_shard=shard, engine="local", processes=processes)
    started = time.perf_counter()
    stats = job.run(None, source, str(work / "ours-out"), Config(download=opts))
    elapsed = time.perf_counter() - started
    assert stats["rows_in"] == len(urls) == stats["rows_out"] + stats["rejected_total"]
    shutil.rmtree(work / "ours-out")
    shutil.rmtree(work / "text_ok")
    return elapsed, stats["rows_out"]


# --- politeness: many loopback hosts ----------------------------------------------------------------

REFERENCE = "b29e4a7"  # the download stage before per-host politeness
UNIFORM_TARGET = 0.95

# One arm, run in a subprocess with PYTHONPATH = the tree under test (ours or the reference's).
ARM_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from jobs.stages.config import Config, DownloadOptions
from curation.fetch.http import FetchOptions
from curation.stage import StageDir
from jobs import download as job
args = json.loads(sys.argv[1])
extra = {}
if args["politeness"] is not None:
    from curation.fetch.politeness import PolitenessOptions
    extra["politeness"] = PolitenessOptions(**args["politeness"])
opts = DownloadOptions(fetch=FetchOptions(timeout_s=10, allowed_addresses=("127.0.0.0/8",)), threads=args["threads"],
                       rows_per_shard=args["shard"], engine="local", processes=args["processes"], **extra)
started = time.perf_counter()
stats = job.run(None, args["source"], args["out"], Config(download=opts))
elapsed = time.perf_counter() - started
assert stats["rows_in"] == stats["rows_out"] + stats["rejected_total"]
polite = {"backoff_s": 0.0, "waited_s": 0.0, "throttled": 0, "cooled_rows": 0}
for marker in StageDir(args["out"], "download").completed_shards().values():
    for key in polite:
        polite[key] += marker.extra.get("politeness", {}).get(key, 0)
print("ARM " + json.dumps({"elapsed": elapsed, "rows_in": stats["rows_in"], "kept": stats["rows_out"],
                           "transient": stats["transient"], "shards": stats["shards"], **polite}))
"""


def _serve_hosts(addresses: list[str], limited: str, latency_s: float, commands, replies) -> None:
    """Servers on ``addresses``, each answer after ``latency_s`` (a remote host's time to first byte);
    commands: ("reset", limit) resets the counts and sets the connection limit of host ``limited``
    (0: none), ("max", None) answers the maxima, ("stop", None)."""
    from curation.sample.images import ImageHandler, Response

    limit = [0]

    class Handler(ImageHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(latency_s)
            if limit[0] and self.server.server_address[0] == limited and self.server.active > limit[0]:
                self.server.record(self.path)
                return self.respond(Response(b"slow down", "text/plain", 429, (("Retry-After", "1"),)))
            super().do_GET()

    routes = sample_routes()
    for path in routes:  # drawn now, not during the first measured run
        routes[path]
    servers = [ImageServer(routes, handler=Handler, host=a).__enter__() for a in addresses]
    replies.put({s.host: s.port for s in servers})
    while (command := commands.get())[0] != "stop":
        if command[0] == "reset":
            limit[0] = command[1]
            for s in servers:
                s.reset_concurrency()
        replies.put({s.host: s.max_concurrent for s in servers})


def _zipf_hosts(n_urls: int, n_hosts: int, exponent: float) -> list[int]:
    import numpy as np

    weights = 1.0 / np.arange(1, n_hosts + 1) ** exponent
    return np.random.default_rng(0).choice(n_hosts, size=n_urls, p=weights / weights.sum()).tolist()


def _host_urls(ports: dict[str, int], hosts: list[int], addresses: list[str]) -> list[str]:
    return [f"http://{addresses[h]}:{ports[addresses[h]]}/images/{sample_name(i % N_SAMPLE_IMAGES)}?n={i}"
            for i, h in enumerate(hosts)]


def _export_tree(rev: str, into: Path) -> Path:
    import subprocess

    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _run_arm(tree: Path, source: str, out: Path, politeness: dict | None, args) -> dict:
    import subprocess

    payload = {"source": source, "out": str(out), "threads": args.threads, "shard": args.shard,
               "processes": args.processes, "politeness": politeness}
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", ARM_SCRIPT, json.dumps(payload)], env=env, cwd=str(tree),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm failed in {tree}:\n{done.stderr[-3000:]}")
    shutil.rmtree(out)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ARM "))[4:])


def main_hosts(args) -> int:
    addresses = [f"127.0.0.{k}" for k in range(2, 2 + args.n_hosts)]
    ctx = multiprocessing.get_context("spawn")
    commands, replies = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=_serve_hosts, args=(addresses, addresses[0], args.latency_ms / 1000, commands, replies),
                         daemon=True)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="bench-download-hosts-"))
    ours, today = REPO, _export_tree(args.reference, work / "reference")
    polite2 = {"max_connections_per_host": 2}
    arms = {
        "uniform": [("today", today, None), ("ours (defaults: 8/host, 4 tasks/host)", ours, {}),
                    ("ours (2/host, 4 tasks/host)", ours, polite2)],
        "skewed": [("today", today, None), ("ours (2/host, 2 tasks/host)", ours, {**polite2, "tasks_per_host": 2})],
    }
    results: dict[str, dict[str, list[dict]]] = {case: {name: [] for name, _, _ in a} for case, a in arms.items()}
    try:
        ports = replies.get(timeout=120)
        hosts = {"uniform": [i % args.n_hosts for i in range(args.urls)],
                 "skewed": _zipf_hosts(args.urls, args.n_hosts, args.zipf)}
        for case, case_arms in arms.items():
            urls = _host_urls(ports, hosts[case], addresses)
            source = _text_ok_stage(work / f"text_ok-{case}", urls, rows_per_file=len(urls))
            for i in range(args.repeat):
                for name, tree, politeness in case_arms:
                    commands.put(("reset", args.host_limit if case == "skewed" else 0))
                    replies.get(timeout=60)
                    figures = _run_arm(tree, source, work / "out", politeness, args)
                    commands.put(("max", None))
                    maxima = replies.get(timeout=60)
                    figures["max_conn_top_host"], figures["max_conn_any_host"] = maxima[addresses[0]], max(maxima.values())
                    figures["urls_per_s"] = len(urls) / figures["elapsed"]
                    results[case][name].append(figures)
                    print(f"run {i + 1} {case} {name}: {figures['urls_per_s']:.1f} urls/s, kept {figures['kept']}, "
                          f"transient {figures['transient']}, max conn top host {figures['max_conn_top_host']} "
                          f"(any host {figures['max_conn_any_host']}), "
                          f"back-off {figures['backoff_s']:.1f} s, waited {figures['waited_s']:.1f} s", flush=True)
    finally:
        commands.put(("stop", None))
        server.join(timeout=10)
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)

    top_share = hosts["skewed"].count(0) / args.urls
    print(f"\nbench download --hosts: {args.urls} urls, {args.n_hosts} loopback hosts answering after "
          f"{args.latency_ms:g} ms, {args.processes} processes x "
          f"{args.threads} threads, {args.shard} rows per shard; skewed: Zipf {args.zipf}, top host {top_share:.0%} "
          f"of urls, answers 429 beyond {args.host_limit} connections")
    print("| case | code | URLs/s (best) | vs today | kept | transient | max conn. top host (any host) | back-off (host-s) "
          "| waited (thread-s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for case, by_name in results.items():
        best = {name: min(runs, key=lambda r: r["elapsed"]) for name, runs in by_name.items()}
        for name, b in best.items():
            ratio = b["urls_per_s"] / best["today"]["urls_per_s"]
            worst_conn = max(r["max_conn_top_host"] for r in by_name[name])
            worst_any = max(r["max_conn_any_host"] for r in by_name[name])
            print(f"| {case} | {name} | {b['urls_per_s']:.1f} | {ratio:.2f} | {b['kept']} | {b['transient']} | "
                  f"{worst_conn} ({worst_any}) | {b['backoff_s']:.1f} | {b['waited_s']:.1f} |")
            summary[f"{case}/{name}"] = {**b, "ratio": ratio, "max_conn_top_host_all_runs": worst_conn}
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    uniform = [v["ratio"] for k, v in summary.items() if k.startswith("uniform/ours")]
    return 1 if args.check and min(uniform) < UNIFORM_TARGET else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=3000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--shard", type=int, default=500, help="rows per shard (both systems)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when ours < {TARGET_RATIO}x img2dataset "
                        f"(--hosts: uniform case < {UNIFORM_TARGET}x today)")
    parser.add_argument("--hosts", action="store_true", help="the politeness cases on many loopback hosts")
    parser.add_argument("--n-hosts", type=int, default=32)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of the skewed case's host law")
    parser.add_argument("--host-limit", type=int, default=3, help="skewed: the top host answers 429 beyond this")
    parser.add_argument("--reference", default=REFERENCE, help="git revision of today's code")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="--hosts: each answer's delay (time to first byte)")
    args = parser.parse_args()
    if args.hosts:
        return main_hosts(args)

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ready,), daemon=True)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        urls = _urls(ready.get(timeout=120), args.urls)
        runs: dict[str, list[tuple[float, int]]] = {"img2dataset": [], "ours": []}
        for i in range(args.repeat):
            for name, runner in (("img2dataset", run_img2dataset), ("ours", run_ours)):
                elapsed, ok = runner(urls, work, args.processes, args.threads, args.shard)
                runs[name].append((elapsed, ok))
                print(f"run {i + 1} {name}: {len(urls) / elapsed:.1f} urls/s ({ok} images kept, {elapsed:.1f} s)", flush=True)
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)

    best = {name: min(r[0] for r in rs) for name, rs in runs.items()}
    rate = {name: len(urls) / t for name, t in best.items()}
    ratio = rate["ours"] / rate["img2dataset"]
    print(
        f"bench download: {len(urls)} loopback urls, {args.processes} processes x {args.threads} threads: "
        f"img2dataset {rate['img2dataset']:.1f} img/s, ours {rate['ours']:.1f} img/s (all filters on), "
        f"ratio {ratio:.2f}x (target >= {TARGET_RATIO})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"urls": len(urls), "rates": rate, "ratio": ratio, "runs": runs}, indent=2))
    return 1 if args.check and ratio < TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
