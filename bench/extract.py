"""WAT extraction throughput on one core: ours (``curation.crawl.reader.extract_file``) against cc2dataset's
(``cc2dataset.main.extract_documents_from_wat(stream, "image")``), on the same file in the same run.

Input: ``--wat PATH``, or by default ``--copies`` (25) copies of the real derived WAT
../shared/data/crawl/derived/aut-example.iawc.warc.wat.gz concatenated into a temporary multi-member
gzip file (25 copies: 32 MB, 20,575 records, 16,650 pairs).

    python bench/extract.py [--wat PATH] [--copies 25] [--runs 3] [--json out.json] [--check]

Rates are pairs per CPU-second of this process (= per core: both run on one thread), best of
``--runs``; pairs are what each returns before uid dedup. Both outputs are then compared as sets of
(url, alt) pairs and every difference is counted by kind. ``--check`` exits 1 when the ratio is
under 3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from fastwarc.warc import ArchiveIterator

from curation.crawl.links import WHITESPACE
from curation.crawl.reader import extract_file

SAMPLE = REPO.parent / "shared" / "data" / "crawl" / "derived" / "aut-example.iawc.warc.wat.gz"


def build_input(copies: int, folder: Path) -> Path:
    """Concatenate ``copies`` copies of the sample WAT (gzip members concatenate into a valid file)."""
    if not SAMPLE.exists():
        sys.exit(f"{SAMPLE} is missing: pass --wat PATH")
    path = folder / f"aut-example-x{copies}.warc.wat.gz"
    with open(path, "wb") as out:
        for _ in range(copies):
            with open(SAMPLE, "rb") as src:
                shutil.copyfileobj(src, out)
    return path


def timed(fn):
    """(CPU seconds, wall seconds, result) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn()
    return time.process_time() - c0, time.perf_counter() - w0, result


def run_ours(path: Path):
    return extract_file(str(path))


def run_cc2dataset(path: Path):
    from cc2dataset.main import extract_documents_from_wat

    with open(path, "rb") as stream:
        return extract_documents_from_wat(stream, "image")


def compare(ours, theirs: list[dict]) -> Counter:
    """Differences between the two (url, alt) sets, by kind."""
    ours_set = set(zip(ours.urls, ours.texts))
    theirs_set = {(d["url"], d["alt"]) for d in theirs}
    rejected = dict(zip(ours.rej_uids, ours.rej_reasons))  # uid -> our reason
    kinds: Counter = Counter()
    only_theirs = theirs_set - ours_set
    stripped = set()  # our pairs explained by a theirs-only pair whose URL we stripped
    for url, alt in only_theirs:
        uid = hashlib.md5((alt + url).encode("utf-8", "surrogatepass")).hexdigest()  # cc2dataset's uid
        if url.strip(WHITESPACE) != url and (url.strip(WHITESPACE), alt) in ours_set:
            kinds["theirs keeps whitespace around the URL, we strip it (same pair otherwise)"] += 1
            stripped.add((url.strip(WHITESPACE), alt))
        elif uid in rejected:
            kinds[f"only cc2dataset: we reject it as {rejected[uid]}"] += 1
        elif not alt.strip(WHITESPACE):
            kinds["only cc2dataset: whitespace-only alt (we reject empty_alt)"] += 1
        else:
            kinds["only cc2dataset: unexplained"] += 1
    for pair in ours_set - theirs_set - stripped:
        kinds["only ours: cc2dataset returned nothing (it drops a whole file on any error)" if not theirs
              else "only ours: unexplained"] += 1
    return kinds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wat", type=Path, help="WAT file to measure (default: copies of the derived sample)")
    ap.add_argument("--copies", type=int, default=25, help="copies of the sample WAT when no --wat")
    ap.add_argument("--runs", type=int, default=3, help="runs of each extractor; the best one counts")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--check", action="store_true", help="exit 1 when ours is under 3x cc2dataset")
    args = ap.parse_args(argv)

    try:
        import cc2dataset.main  # noqa: F401 - imports pyspark: keep it out of the timings
        from loguru import logger
    except ImportError as e:
        sys.exit(f"{e}: pip install -e '.[bench]' && pip install --no-deps cc2dataset==1.5.0")
    logger.remove()  # cc2dataset logs each unreadable record; not part of the extraction

    tmp = None
    if args.wat is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-extract-")
        args.wat = build_input(args.copies, Path(tmp.name))
    try:
        records = sum(1 for _ in ArchiveIterator(str(args.wat), parse_http=False))
        size_mb = args.wat.stat().st_size / 1e6
        print(f"input: {args.wat} ({size_mb:.1f} MB, {records} records)")

        ours_runs, theirs_runs = [], []
        for _ in range(args.runs):  # alternated, so that a busy moment of the machine hits both
            ours_runs.append(timed(lambda: run_ours(args.wat)))
            theirs_runs.append(timed(lambda: run_cc2dataset(args.wat)))
        ours_cpu, ours_wall, ours = min(ours_runs, key=lambda r: r[0])
        theirs_cpu, theirs_wall, theirs = min(theirs_runs, key=lambda r: r[0])
    finally:
        if tmp is not None:
            tmp.cleanup()

    ours_pairs, theirs_pairs = len(ours.uids), len(theirs)
    ours_rate = ours_pairs / ours_cpu
    theirs_rate = theirs_pairs / theirs_cpu
    ratio = ours_rate / theirs_rate if theirs_rate else float("inf")
    print(f"ours:       {ours_pairs} pairs, {ours_cpu:.3f} s CPU ({ours_wall:.3f} s wall), "
          f"{len(ours.rej_uids)} rejected rows: {dict(Counter(ours.rej_reasons))}")
    print(f"cc2dataset: {theirs_pairs} pairs, {theirs_cpu:.3f} s CPU ({theirs_wall:.3f} s wall)")

    kinds = compare(ours, theirs)
    same = len(set(zip(ours.urls, ours.texts)))
    print(f"(url, alt) sets: {same} distinct pairs ours, {len({(d['url'], d['alt']) for d in theirs})} cc2dataset; "
          + ("identical" if not kinds else f"{sum(kinds.values())} differences:"))
    for kind, n in kinds.most_common():
        print(f"  {n:6d}  {kind}")

    print(f"extract: ours {ours_rate:.0f} pairs/s/core, cc2dataset {theirs_rate:.0f} pairs/s/core, ratio {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "input": str(args.wat), "records": records, "runs": args.runs,
            "ours": {"pairs": ours_pairs, "cpu_s": ours_cpu, "wall_s": ours_wall, "pairs_per_s_core": ours_rate},
            "cc2dataset": {"pairs": theirs_pairs, "cpu_s": theirs_cpu, "wall_s": theirs_wall,
                           "pairs_per_s_core": theirs_rate},
            "ratio": ratio, "differences": dict(kinds),
        }, indent=2))
    return 1 if args.check and ratio < 3 else 0


if __name__ == "__main__":
    sys.exit(main())
