"""Metadata balancing: matching throughput against a MetaCLIP-sized entry list, and the two properties of the
draw on a bench pool.

Entries: ``--entries`` (default 500,000): the n-grams (1 to 4 words, case kept) of the first 5,000 of the
10,000 real LAION captions of ../shared/data/captions, the most frequent first, padded with word pairs drawn
from the whole LAION vocabulary (most of which match nothing, like the long tail of a real entry list).
Pool: ``--captions`` captions made from the other 5,000 with deterministic perturbations (word swaps, words
borrowed from other captions, punctuation), md5 uids, so no cache or duplicate shortcut helps.

    python bench/balance.py [--entries 500000] [--captions 200000] [--t 0] [--json out.json] [--check]

Matching rates are captions per CPU-second of this process (= per core). ``--t 0`` picks t so that about a
third of the matched entries lie above it. The draw check: every row of an entry matched at most t times is
kept; rows whose entries are all above t are kept at the rate sum(1 - prod(1 - t / count_i)), within binomial
noise (z-score printed). ``--check`` exits 1 when matching is under 50k captions/s/core or a property fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from filters.balance import EntryMatcher, count_entries, decide, keep_probability, largest, log2_histogram  # noqa: E402

LAION = REPO.parent / "shared" / "data" / "captions" / "laion_test_10000.parquet"


def laion() -> list[str]:
    if not LAION.exists():
        sys.exit(f"{LAION} is absent")
    return [t for t in pq.read_table(LAION).column("TEXT").to_pylist() if t]


def ngram_entries(captions: list[str], vocabulary: list[str], n_entries: int, seed: int = 0) -> list[str]:
    grams: Counter = Counter()
    for caption in captions:
        words = caption.split()
        for n in range(1, 5):
            grams.update(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    entries = [g for g, _ in sorted(grams.items(), key=lambda kv: (-kv[1], kv[0]))[:n_entries]]
    seen, rng = set(entries), random.Random(seed)
    while len(entries) < n_entries:
        pair = f"{rng.choice(vocabulary)} {rng.choice(vocabulary)}"
        if pair not in seen:
            seen.add(pair)
            entries.append(pair)
    return entries


def pool(captions: list[str], n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = captions[i % len(captions)].split()
        if words and rng.random() < 0.7:
            j = rng.randrange(len(words))
            words[j] = rng.choice(rng.choice(captions).split() or ["x"])
        if len(words) > 2 and rng.random() < 0.5:
            j = rng.randrange(len(words) - 1)
            words[j], words[j + 1] = words[j + 1], words[j]
        out.append(" ".join(words) + rng.choice(["", ".", "!", ", etc"]))
    return out


def bench_matching(entries: list[str], texts: list[str]) -> dict:
    started = time.process_time()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    matcher = EntryMatcher(entries)
    build_s = time.process_time() - started
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    matches = matcher.match_many(texts)
    match_s = time.process_time() - started
    return {
        "entries": len(entries), "captions": len(texts), "automaton_build_cpu_s": round(build_s, 2),
        "automaton_rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        "captions_per_cpu_second": round(len(texts) / match_s), "mean_entries_per_caption": round(
            sum(map(len, matches)) / len(texts), 2), "unmatched_fraction": round(sum(not m for m in matches) / len(texts), 4),
    }, matches


def check_draw(matches: list[list[int]], entries: list[str], t: int, seed: int = 0) -> dict:
    uids = [hashlib.md5(f"row{i}".encode()).hexdigest() for i in range(len(matches))]
    counts = count_entries(matches, len(entries))
    if t <= 0:
        matched = np.sort(counts[counts > 0])
        t = int(matched[int(len(matched) * 2 / 3)])
    kept = np.array([decide(seed, u, m, counts, entries, t) is None for u, m in zip(uids, matches)])
    tail_rows = [i for i, m in enumerate(matches) if m and min(counts[e] for e in m) <= t]
    head_rows = [i for i, m in enumerate(matches) if m and min(counts[e] for e in m) > t]
    p = np.array([keep_probability([counts[e] for e in matches[i]], t) for i in head_rows])
    observed = int(kept[head_rows].sum())
    z = (observed - p.sum()) / max(np.sqrt((p * (1 - p)).sum()), 1e-9)
    after = count_entries((m for m, k in zip(matches, kept) if k), len(entries))
    return {
        "t": t, "rows": len(matches), "kept": int(kept.sum()),
        "matched_entries": int((counts > 0).sum()), "entries_above_t": int((counts > t).sum()),
        "rows_with_an_entry_at_most_t": len(tail_rows), "tail_rows_kept": int(kept[tail_rows].sum()),
        "rows_with_all_entries_above_t": len(head_rows), "head_rows_kept": observed,
        "expected_kept": round(float(p.sum()), 1), "z": round(float(z), 2),
        "histogram_before": log2_histogram(counts), "histogram_after": log2_histogram(after),
        "largest_before": largest(counts, entries, 10), "largest_after": largest(after, entries, 10),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--captions", type=int, default=200_000)
    parser.add_argument("--t", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    captions = laion()
    vocabulary = sorted({w for c in captions for w in c.split()})
    entries = ngram_entries(captions[:5000], vocabulary, args.entries)
    texts = pool(captions[5000:], args.captions)
    matching, matches = bench_matching(entries, texts)
    print(json.dumps(matching, indent=1))
    draw = check_draw(matches, entries, args.t)
    for key in ("before", "after"):
        print(f"entries by rows per entry, {key} balancing (t = {draw['t']}):")
        for b in draw[f"histogram_{key}"]:
            print(f"  {b['min']:>8}..{b['max']:<8} {b['entries']:>8}")
    print(json.dumps({k: v for k, v in draw.items() if not k.startswith("histogram")}, ensure_ascii=False, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"matching": matching, "draw": draw}, ensure_ascii=False, indent=1))
    ok = (matching["captions_per_cpu_second"] >= 50_000 and abs(draw["z"]) < 4
          and draw["tail_rows_kept"] == draw["rows_with_an_entry_at_most_t"])
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
