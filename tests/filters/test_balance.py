"""Metadata balancing: matching against a brute-force reference (MetaCLIP's substr_matching written out as
``entry in text`` over every entry) and the properties of the draw."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from filters.balance import (
    EntryMatcher,
    can_match,
    count_entries,
    decide,
    draw,
    entries_digest,
    keep_probability,
    largest,
    log2_histogram,
    matcher_for,
    parse_entries,
)
from schemas import Reason

LAION = Path("../shared/data/captions/laion_test_10000.parquet")


def brute_force(text: str | None, entries: list[str]) -> list[int]:
    """MetaCLIP's substr_matching, written independently: the spacing, then ``" entry " in text``."""
    if not text:
        return []
    spaced = " " + text + " "
    for mark in [",", ".", ";", ":", "?", "!", "`"]:
        spaced = spaced.replace(mark, " " + mark + " ")
    for char in ["\t", "\n", "\r"]:
        spaced = spaced.replace(char, " ")
    return [i for i, entry in enumerate(entries) if " " + entry + " " in spaced]


def laion_captions() -> list[str]:
    if not LAION.exists():
        pytest.skip("../shared/data is absent")
    return [t for t in pq.read_table(LAION).column("TEXT").to_pylist() if t is not None]


def ngram_entries(captions: list[str], n_entries: int, seed: int) -> list[str]:
    """Entries the captions share: their words and word pairs (case kept), sampled."""
    grams = set()
    for caption in captions:
        words = caption.split()
        grams.update(words)
        grams.update(" ".join(p) for p in zip(words, words[1:]))
    rng = random.Random(seed)
    return rng.sample(sorted(grams), min(n_entries, len(grams)))


def test_matching_equals_brute_force_on_real_laion_captions():
    captions = laion_captions()
    entries = ngram_entries(captions, 3000, seed=1) + ["the", "The", "a", "of", "for sale", "t-shirt", "logo"]
    matcher = EntryMatcher(entries)
    matched_rows = 0
    for caption in captions:
        expected = brute_force(caption, entries)
        assert matcher.match(caption) == expected, caption
        matched_rows += bool(expected)
    assert matched_rows > len(captions) // 3  # the reference is not vacuous


ALPHABET = ["a", "b", "ab", "ba", "é", "日本", "😀", " ", " ", ",", ".", "!", "?", ";", ":", "`", "-", "'", "\t", "\n", "A"]


def test_matching_equals_brute_force_on_generated_captions_with_overlaps_punctuation_and_non_ascii():
    rng = random.Random(7)
    words = ["a", "b", "ab", "ba", "aba", "é", "café", "日本", "日本語", "😀", "A", "Ab", "x-y", "it's"]
    entries = sorted({" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(200)})
    entries += ["a a", "a a a", "b a", "日", "本", "e\u0301", "U.S.", "a,b"]  # overlaps; decomposed é; unmatchable ones
    matcher = EntryMatcher(entries)
    for _ in range(3000):
        caption = "".join(rng.choice(ALPHABET + words) for _ in range(rng.randint(0, 25)))
        assert matcher.match(caption) == brute_force(caption, entries), repr(caption)


def test_matching_is_case_sensitive_and_needs_word_boundaries():
    matcher = EntryMatcher(["dog", "Dog", "hot dog", "do"])
    assert matcher.match("A Hot dog, with dogs.") == [0]  # "dog" before the comma; not "Hot dog", not "dogs"
    assert matcher.match("Dog!") == [1]
    assert matcher.match("hot dog") == [0, 2]  # overlapping entries both match
    assert matcher.match("hotdog") == []


def test_entries_with_spaced_punctuation_not_set_off_by_spaces_never_match():
    assert not can_match("U.S.") and not can_match("a,b") and not can_match("a\tb")
    assert can_match("t-shirt") and can_match("rock'n'roll") and can_match(",") and can_match("a , b")
    assert EntryMatcher(["U.S.", "U", ",", "a , b"]).match("made in the U.S., a,b") == [1, 2, 3]


def test_a_caption_counts_an_entry_once():
    assert EntryMatcher(["cat"]).match("cat cat cat") == [0]


def test_parse_entries_reads_json_lists_and_text_lines():
    assert parse_entries(json.dumps(["cat", "dog", "cat", ""]).encode()) == ("cat", "dog")
    assert parse_entries(b"cat\r\n  red car \n\n dog\ncat\n") == ("cat", "red car", "dog")
    with pytest.raises(ValueError):
        parse_entries(b'["cat", 3]')


def test_matcher_is_cached_per_entry_list():
    a = matcher_for(("x", "y"))
    assert matcher_for(("x", "y")) is a
    assert matcher_for(("x", "z")) is not a
    assert entries_digest(("x", "y")) != entries_digest(("xy",))


# --- the draw ------------------------------------------------------------------------------------


def test_draw_is_a_fixed_uniform_function_of_seed_uid_and_entry():
    assert draw(0, "u1", "cat") == draw(0, "u1", "cat")
    assert draw(0, "u1", "cat") != draw(1, "u1", "cat") != draw(0, "u2", "cat")
    values = np.array([draw(0, f"uid{i}", "cat") for i in range(20_000)])
    assert 0.0 <= values.min() and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.01 and abs((values < 0.1).mean() - 0.1) < 0.01


def test_keep_probability_is_one_minus_the_product_of_misses():
    assert keep_probability([], 10) == 0.0
    assert keep_probability([5], 10) == 1.0
    assert keep_probability([40], 10) == pytest.approx(0.25)
    assert keep_probability([40, 20], 10) == pytest.approx(1 - 0.75 * 0.5)


def pool(n_rows: int, seed: int) -> tuple[list[str], list[list[int]], list[str]]:
    """A Zipf-like pool: uids and each row's entries (a head entry in most rows, a rare tail in few)."""
    rng = random.Random(seed)
    entries = [f"e{i}" for i in range(60)]
    weights = [1.0 / (i + 1) ** 1.2 for i in range(len(entries))]
    uids = [f"{i:032x}" for i in range(n_rows)]
    matches = [sorted(set(rng.choices(range(len(entries)), weights, k=rng.randint(0, 3)))) for _ in uids]
    return uids, matches, entries


def test_an_entry_matched_at_most_t_times_keeps_all_its_rows_and_unmatched_rows_are_dropped():
    uids, matches, entries = pool(20_000, seed=3)
    t = 300
    counts = count_entries(matches, len(entries))
    verdicts = [decide(0, u, m, counts, entries, t) for u, m in zip(uids, matches)]
    tail = {e for e in range(len(entries)) if 0 < counts[e] <= t}
    assert tail and (counts > t).any()
    for m, v in zip(matches, verdicts):
        if not m:
            assert v.reason == Reason.NO_METADATA_MATCH
        elif set(m) & tail:
            assert v is None
    head_only = [(m, v) for m, v in zip(matches, verdicts) if m and not set(m) & tail]
    expected = sum(keep_probability([counts[e] for e in m], t) for m, _ in head_only)
    kept = sum(v is None for _, v in head_only)
    sd = np.sqrt(sum(p * (1 - p) for p in (keep_probability([counts[e] for e in m], t) for m, _ in head_only)))
    assert abs(kept - expected) < 5 * sd  # binomial noise
    assert kept < len(head_only)


def test_balanced_out_detail_names_the_rarest_entries_of_the_row():
    counts = np.array([5000, 900, 70_000, 3000])
    entries = ["logo", "red", "the", "car"]
    uid = next(u for u in (f"u{i}" for i in range(10_000)) if decide(0, u, [0, 1, 2, 3], counts, entries, 10) is not None)
    verdict = decide(0, uid, [0, 1, 2, 3], counts, entries, 10)
    assert verdict.reason == Reason.BALANCED_OUT
    assert verdict.detail == "fewest matches: 'red' (900), 'car' (3,000), 'logo' (5,000); t = 10"


def test_the_decision_does_not_depend_on_row_order_and_a_rerun_gives_the_same_rows():
    uids, matches, entries = pool(5000, seed=4)
    counts = count_entries(matches, len(entries))
    first = {u for u, m in zip(uids, matches) if decide(9, u, m, counts, entries, 50) is None}
    shuffled = list(zip(uids, matches))
    random.Random(1).shuffle(shuffled)
    halves = [shuffled[: len(shuffled) // 3], shuffled[len(shuffled) // 3 :]]  # two "partitions"
    second = {u for part in halves for u, m in part if decide(9, u, m, counts, entries, 50) is None}
    assert first == second
    assert first != {u for u, m in zip(uids, matches) if decide(10, u, m, counts, entries, 50) is None}


def test_log2_histogram_and_largest():
    counts = np.array([0, 1, 2, 3, 4, 7, 8, 1000])
    assert log2_histogram(counts) == [
        {"min": 1, "max": 1, "entries": 1},
        {"min": 2, "max": 3, "entries": 2},
        {"min": 4, "max": 7, "entries": 2},
        {"min": 8, "max": 15, "entries": 1},
        *[{"min": 2**k, "max": 2 ** (k + 1) - 1, "entries": 0} for k in range(4, 9)],
        {"min": 512, "max": 1023, "entries": 1},
    ]
    names = [f"e{i}" for i in range(8)]
    assert largest(counts, names, 3) == [["e7", 1000], ["e6", 8], ["e5", 7]]
    assert largest(np.array([2, 2, 0]), ["a", "b", "c"], 5) == [["a", 2], ["b", 2]]
