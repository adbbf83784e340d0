"""Safety hash lists and content hashes: memory per entry and lookup cost at 10^7 entries, and what hashing
adds to the download stage's CPU time per image.

1. *Exact lists* (``filters/safety.py``'s ExactSet): ``--entries`` random SHA-256 digests (default 10^7) as
   the executor holds them (two sorted uint64 arrays), bytes per entry, the time to build the lookup, and the
   batch lookup cost per row for ``--queries`` digests, half of them listed (target: <= 16 bytes per entry,
   <= 1 us per row). Parsing a list file is timed on ``--parse-lines`` lines and given per line.
2. *PDQ lists* (PdqSet, brute force over popcounts): bytes per entry and cost per row at ``--pdq-entries``.
3. *Hashing overhead*: a separate process serves the embedded sample's 150 JPEGs on 127.0.0.1 (as
   bench/download.py does); the download stage's own ``download_table`` fetches ``--urls`` of them in this
   process with ``--threads`` threads, with an image_md5 list of 10^6 entries loaded (so the screen's
   lookup is in the run), and the CPU time of this process per image is measured. The sha256 + md5 of the
   same bodies, in the stage's read chunks, is then timed alone: its share of the stage's CPU time per image
   is what hashing adds (target: <= 3 %).

    python bench/safety.py [--entries 10000000] [--queries 1000000] [--urls 600] [--json out.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse
import hashlib
import json
import multiprocessing
import tempfile
import time
from urllib.parse import urlsplit

import numpy as np

from bench.download import _serve, _urls
from curation.fetch.http import READ_CHUNK, FetchOptions
from curation.sample.images import N_SAMPLE_IMAGES, sample_routes
from filters.safety import ExactSet, PdqSet, SafetyList, SafetyOptions, parse_hashes
from jobs.stages.config import DownloadOptions
from jobs.stages.download import download_table
from jobs.stages.safety import load_screen
from schemas import TEXT_OK

TARGET_BYTES, TARGET_US, TARGET_SHARE = 16, 1.0, 0.03
OVERHEAD_LIST = 1_000_000  # the list loaded in the stage run (its one lookup per body costs the same at 10^7)


def bench_exact(entries: int, queries: int, rng) -> dict:
    digests = rng.integers(0, 256, (entries, 32), dtype=np.uint8)
    started = time.perf_counter()
    lookup = ExactSet(digests)
    built = time.perf_counter() - started
    listed = digests[rng.integers(0, entries, queries // 2)]
    del digests
    batch = np.concatenate([listed, rng.integers(0, 256, (queries - len(listed), 32), dtype=np.uint8)])
    rng.shuffle(batch)
    lookup.contains(batch[:1000])  # warm
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        found = lookup.contains(batch)
        best = min(best, time.perf_counter() - started)
    assert found.sum() >= len(listed)
    return {"entries": entries, "bytes_per_entry": lookup.nbytes / entries, "build_s": built,
            "us_per_row": best / queries * 1e6, "queries": queries}


def bench_parse(lines: int, rng) -> dict:
    text = "".join(f"{d.tobytes().hex()}\n" for d in rng.integers(0, 256, (lines, 16), dtype=np.uint8)).encode()
    started = time.perf_counter()
    parse_hashes(b"# md5 list\n" + text, 16)
    return {"lines": lines, "us_per_line": (time.perf_counter() - started) / lines * 1e6}


def bench_pdq(entries: int, rng) -> dict:
    lookup = PdqSet(rng.integers(0, 256, (entries, 32), dtype=np.uint8))
    queries = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    started = time.perf_counter()
    lookup.nearest(queries)
    return {"entries": entries, "bytes_per_entry": lookup.nbytes / entries,
            "ms_per_row": (time.perf_counter() - started) / len(queries) * 1e3}


def _hash_cpu(bodies: list[bytes], repeat: int = 5) -> float:
    """CPU seconds per body of sha256 + md5 updated chunk by chunk, as the fetch does (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for body in bodies:
            hashers = [hashlib.sha256(), hashlib.md5()]
            for k in range(0, len(body), READ_CHUNK):
                for h in hashers:
                    h.update(body[k : k + READ_CHUNK])
            [h.digest() for h in hashers]
        best = min(best, time.process_time() - started)
    return best / len(bodies)


def bench_overhead(n_urls: int, threads: int, entries: int, rng) -> dict:
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    server = context.Process(target=_serve, args=(ready,), daemon=True)
    server.start()
    try:
        urls = _urls(ready.get(timeout=120), n_urls)
        with tempfile.TemporaryDirectory() as tmp:
            listed = Path(tmp) / "md5.txt"
            listed.write_bytes(b"".join(d.tobytes().hex().encode() + b"\n"
                                        for d in rng.integers(0, 256, (entries, 16), dtype=np.uint8)))
            screen = load_screen(SafetyOptions((SafetyList("bench", str(listed), "image_md5"),)))
            rows = TEXT_OK.from_pylist([{"uid": f"{i:032x}", "url": u, "text": "t", "source_file": "bench"}
                                        for i, u in enumerate(urls)])
            opts = DownloadOptions(fetch=FetchOptions(timeout_s=10, allowed_addresses=("127.0.0.1",)), threads=threads)
            download_table(rows.slice(0, threads), opts, screen=screen)  # warm: connections, imports
            started = time.process_time()
            kept, rejected = download_table(rows, opts, screen=screen)
            stage_cpu = (time.process_time() - started) / n_urls
    finally:
        server.terminate()
    routes = sample_routes()
    bodies = [routes[urlsplit(u).path].body for u in urls[:N_SAMPLE_IMAGES]]
    hash_cpu = _hash_cpu(bodies)
    return {"urls": n_urls, "kept": kept.num_rows, "rejected": rejected.num_rows, "stage_cpu_ms_per_image": stage_cpu * 1e3,
            "hash_cpu_ms_per_image": hash_cpu * 1e3, "mean_body_kb": sum(map(len, bodies)) / len(bodies) / 1024,
            "hash_share": hash_cpu / stage_cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--parse-lines", type=int, default=1_000_000)
    parser.add_argument("--pdq-entries", type=int, default=1_000_000)
    parser.add_argument("--urls", type=int, default=600)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    exact = bench_exact(args.entries, args.queries, rng)
    print(f"exact list, {exact['entries']:,} SHA-256 entries: {exact['bytes_per_entry']:.1f} bytes/entry "
          f"(target <= {TARGET_BYTES}), built in {exact['build_s']:.1f} s, batch lookup {exact['us_per_row']:.3f} us/row "
          f"over {exact['queries']:,} rows (target <= {TARGET_US})")
    parse = bench_parse(args.parse_lines, rng)
    print(f"list file parsing: {parse['us_per_line']:.2f} us/line ({parse['lines']:,} lines; "
          f"{parse['us_per_line'] * args.entries / 1e6:.1f} s for {args.entries:,})")
    pdq = bench_pdq(args.pdq_entries, rng)
    print(f"pdq list, {pdq['entries']:,} entries: {pdq['bytes_per_entry']:.0f} bytes/entry, "
          f"brute-force lookup {pdq['ms_per_row']:.1f} ms/row")
    listed = min(args.entries, OVERHEAD_LIST)
    over = bench_overhead(args.urls, args.threads, listed, rng)
    print(f"download stage: {over['stage_cpu_ms_per_image']:.2f} ms CPU/image ({over['urls']} URLs, {over['kept']} kept, "
          f"image_md5 list of {listed:,} loaded); sha256 + md5 of the bodies ({over['mean_body_kb']:.0f} KB mean): "
          f"{over['hash_cpu_ms_per_image']:.3f} ms/image = {100 * over['hash_share']:.2f} % (target <= {100 * TARGET_SHARE:.0f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"exact": exact, "parse": parse, "pdq": pdq, "overhead": over}, indent=2))
    ok = exact["bytes_per_entry"] <= TARGET_BYTES and exact["us_per_row"] <= TARGET_US and over["hash_share"] <= TARGET_SHARE
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
