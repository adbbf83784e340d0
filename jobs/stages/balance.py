"""The balance stage's units of work (MetaCLIP metadata balancing), engine-agnostic. The Spark job
(jobs/balance.py) distributes these calls and counts the entries with a Spark aggregation.

Phase A, one task per input file: every caption matched against the entries (filters/balance.py);
``_work/matches/part-iNNNNNN.parquet`` holds each row's uid and matched entry ids (a resumed run reads it
instead of matching again). The job counts the rows of each entry over every file.
Phase B, one task per input file: each row kept or rejected from the counts (no_metadata_match,
balanced_out) into ``data/part-iNNNNNN.parquet`` with the input's own columns, and the kept rows' entries
counted into ``_work/kept/part-iNNNNNN.parquet`` (the counts after balancing in _stats.json).

The stage reads the output of filter-text, dedup, annotate or semdedup and writes the same table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.errors import InputError
from curation.lifecycle import StageSpec
from curation.stage import COMPRESSION, STATS, ShardStats, StageDir, read_parquet, rejected_table
from filters.balance import (
    can_match, count_entries, decide, entries_digest, largest, log2_histogram, matcher_for, parse_entries,
)
from schemas import DETAIL, REASON, UID

STAGE = "balance"
INPUT_STAGES = ("filter_text", "dedup", "annotate", "semdedup")
SPEC = StageSpec(STAGE, upstream=None, input_columns=(UID, "text"))
MATCHES_DIR = "_work/matches"
KEPT_DIR = "_work/kept"
COUNTS_FILE = "_work/entry_counts.parquet"
ENTRY = "entry"
ENTRIES = "entries"
TOP = 20  # _stats.json lists this many of the largest entries, before and after

MATCHES_SCHEMA = pa.schema([pa.field(UID, pa.string(), False), pa.field(ENTRIES, pa.list_(pa.int32()), False)])
COUNTS_SCHEMA = pa.schema([pa.field(ENTRY, pa.int32(), False), pa.field("count", pa.int64(), False)])


def shard_name(index: int) -> str:
    return f"part-i{index:06d}"


def write_work_table(stage: StageDir, path: str, table: pa.Table) -> None:
    """A parquet file under the stage's _work/ folder, written under a temporary name and renamed."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION)
    storage.write_bytes_atomic(stage.path(path), sink.getvalue().to_pybytes(), stage.storage)


# --- inputs ------------------------------------------------------------------------------------------


def load_entries(uri: str, options: storage.StorageOptions) -> tuple[str, ...]:
    """The entry list at ``uri`` (local or s3://): a JSON list of strings or one entry per line."""
    if not storage.exists(uri, options):
        raise InputError(f"[balance] metadata: no entry list at {uri}")
    try:
        entries = parse_entries(storage.read_bytes(uri, options))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"[balance] metadata {uri}: {e}") from e
    if not entries:
        raise InputError(f"[balance] metadata {uri} holds no entry")
    return entries


def input_stage(inputs: Sequence[str], options: storage.StorageOptions) -> str | None:
    """The stage that wrote the input folders (one of INPUT_STAGES; a balance output stands for the stage
    it read); None for bare parquet files. Another stage's folder is an InputError naming it."""
    found = set()
    for item in inputs:
        path = storage.join(storage.absolute(item), STATS)
        if not storage.exists(path, options):
            continue
        stats = StageDir(storage.absolute(item), "?", options).stats()
        made_by = stats.get("input_stage") if stats.get("stage") == STAGE else stats.get("stage")
        if made_by not in INPUT_STAGES:
            raise InputError(f"input {item} is the output of stage {made_by}; balance reads the output of "
                             f"{', '.join(s.replace('_', '-') for s in INPUT_STAGES)}")
        found.add(made_by)
    if len(found) > 1:
        raise InputError(f"balance inputs come from several stages {sorted(found)}: give one stage's output")
    return found.pop() if found else None


def unmatchable(entries: Sequence[str]) -> int:
    return sum(not can_match(e) for e in entries)


# --- phase A: matching -------------------------------------------------------------------------------


def match_task(stage: StageDir, index: int, uri: str, entries: Sequence[str], key: str) -> pa.Table:
    """Each row's uid and matched entry ids for one input file (written once, read back on a rerun)."""
    path = stage.path(MATCHES_DIR, f"{shard_name(index)}.parquet")
    if storage.exists(path, stage.storage):
        return read_parquet(path, stage.storage)
    table = read_parquet(uri, stage.storage).select([UID, "text"])
    matches = matcher_for(entries, key).match_many(table.column("text").to_pylist())
    result = pa.table({UID: table.column(UID), ENTRIES: pa.array(matches, pa.list_(pa.int32()))}, schema=MATCHES_SCHEMA)
    write_work_table(stage, f"{MATCHES_DIR}/{shard_name(index)}.parquet", result)
    return result


def pairs(matches: pa.Table) -> pa.Table:
    """The (uid, entry) pairs of a matches table: one row per row and entry it matched."""
    entries = matches.column(ENTRIES).combine_chunks()
    rows = pc.list_parent_indices(entries)
    return pa.table({UID: pc.take(matches.column(UID), rows), ENTRY: pc.list_flatten(entries)})


def counts_array(table: pa.Table, n_entries: int) -> np.ndarray:
    """(entry, count) rows as an array indexed by entry id."""
    counts = np.zeros(n_entries, np.int64)
    counts[table.column(ENTRY).to_numpy()] = table.column("count").to_numpy()
    return counts


def counts_table(counts: np.ndarray) -> pa.Table:
    present = np.flatnonzero(counts)
    return pa.table({ENTRY: pa.array(present, pa.int32()), "count": pa.array(counts[present], pa.int64())},
                    schema=COUNTS_SCHEMA)


def save_counts(stage: StageDir, counts: np.ndarray) -> None:
    write_work_table(stage, COUNTS_FILE, counts_table(counts))


def load_counts(stage: StageDir, n_entries: int) -> np.ndarray | None:
    path = stage.path(COUNTS_FILE)
    if not storage.exists(path, stage.storage):
        return None
    return counts_array(read_parquet(path, stage.storage), n_entries)


# --- phase B: the draw -------------------------------------------------------------------------------


def split_rows(
    table: pa.Table, matches: pa.Table, counts: np.ndarray, entries: Sequence[str], t: int, seed: int
) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(kept rows in the input's columns, REJECTED rows, the kept rows' entry ids) of one file."""
    uids = table.column(UID).to_pylist()
    if matches.column(UID).to_pylist() != uids:
        raise ValueError("the matches file does not hold the input file's rows in order: rerun with --overwrite")
    row_entries = matches.column(ENTRIES).to_pylist()
    verdicts = [decide(seed, u, m, counts, entries, t) for u, m in zip(uids, row_entries)]
    keep = [v is None for v in verdicts]
    dropped = [(u, v) for u, v in zip(uids, verdicts) if v is not None]
    rejected = rejected_table(
        {UID: [u for u, _ in dropped], REASON: [v.reason for _, v in dropped], DETAIL: [v.detail for _, v in dropped]}, STAGE
    )
    kept_entries = np.fromiter((e for m, k in zip(row_entries, keep) if k for e in m), np.int64)
    return table.filter(pa.array(keep, pa.bool_())), rejected, kept_entries


def apply_task(
    stage: StageDir, index: int, uri: str, counts: np.ndarray, entries: Sequence[str], key: str, t: int, seed: int
) -> ShardStats:
    """Phase B for one input file (skipped when its marker exists)."""
    shard = shard_name(index)
    if stage.has_shard(shard):
        return ShardStats(shard, 0, 0, extra={"skipped": True})
    table = read_parquet(uri, stage.storage)
    matches = match_task(stage, index, uri, entries, key)
    kept, rejected, kept_entries = split_rows(table, matches, counts, entries, t, seed)
    kept_counts = np.bincount(kept_entries, minlength=len(entries)) if kept_entries.size else np.zeros(len(entries), np.int64)
    write_work_table(stage, f"{KEPT_DIR}/{shard}.parquet", counts_table(kept_counts))  # before the marker
    return stage.write_shard(shard, kept, rejected, rows_in=table.num_rows, extra={"file": uri})


def balance_table(table: pa.Table, entries: Sequence[str], t: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """The whole stage in memory, without Spark: what the job must produce (up to row order)."""
    matcher = matcher_for(entries, entries_digest(entries))
    matches = pa.table({UID: table.column(UID), ENTRIES: pa.array(matcher.match_many(table.column("text").to_pylist()),
                                                                  pa.list_(pa.int32()))})
    counts = count_entries(matches.column(ENTRIES).to_pylist(), len(entries))
    kept, rejected, _ = split_rows(table, matches, counts, entries, t, seed)
    return kept, rejected


# --- statistics --------------------------------------------------------------------------------------


def entry_stats(before: np.ndarray, after: np.ndarray, entries: Sequence[str], t: int, seed: int,
                made_by: str | None) -> dict:
    """What _stats.json says of the balancing: entry counts, rows per entry before and after."""
    return {
        "input_stage": made_by,
        "balance": {
            "t": t,
            "seed": seed,
            "entries": len(entries),
            "unmatchable_entries": unmatchable(entries),
            "matched_entries": int((before > 0).sum()),
            "entries_kept": int((after > 0).sum()),
            "rows_per_entry": {
                "before": {"histogram": log2_histogram(before), "largest": largest(before, entries, TOP)},
                "after": {"histogram": log2_histogram(after), "largest": largest(after, entries, TOP)},
            },
        },
    }
