"""The stage directory contract every stage follows.

    OUT/data/part-*.parquet       kept rows (zstd)
    OUT/rejected/part-*.parquet   uid, stage, reason, detail
    OUT/_shards/part-*.json       per-shard completion marker + counts (written after its files)
    OUT/_stats.json               rows_in, rows_out, rejected by reason, elapsed, config
    OUT/_SUCCESS                  written last

Files are written under a temporary name and renamed. Counts come from the tables that were written
(never from Spark accumulators, which double-count on task retry). A shard whose marker exists is
complete: a rerun skips it; a rerun over a stage with ``_SUCCESS`` does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation import storage
from curation.errors import IncompleteStageError, StaleStageError
from curation.storage import StorageOptions
from schemas import DETAIL, REASON, REJECTED, SHARD_STATS, STAGE_COLUMN, UID, Reason, Table

log = logging.getLogger(__name__)

DATA = "data"
REJECTED_DIR = "rejected"
SHARDS = "_shards"
STATS = "_stats.json"
SUCCESS = "_SUCCESS"
COMPRESSION = "zstd"


INPUTS_FILE = "_work/inputs.json"


class InputsChangedError(StaleStageError, ValueError):
    """A resumed run was given other inputs than the run it resumes."""


class SettingsChangedError(StaleStageError, RuntimeError):
    """A resumed run was given other settings (rules, blocklists) than the run it resumes."""


class AccountingError(RuntimeError):
    """rows_in != rows_out + rejected: a bug, never a data problem; the stage is not marked done."""


@dataclass
class ShardStats:
    shard: str
    rows_in: int
    rows_out: int
    rejected: dict[str, int] = field(default_factory=dict)
    kept_dir: str = DATA
    extra: dict = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardStats:
        return cls(**json.loads(text))


def shard_stats_batch(stats: list[ShardStats]) -> pa.RecordBatch:
    """Shard counts as a SHARD_STATS batch: what a Spark task hands back to the driver."""
    rows = [
        {
            "shard": s.shard,
            "rows_in": s.rows_in,
            "rows_out": s.rows_out,
            "rejected_json": json.dumps(s.rejected),
            "skipped": bool(s.extra.get("skipped")),
        }
        for s in stats
    ]
    return pa.RecordBatch.from_pylist(rows, schema=SHARD_STATS.arrow_schema())


def rejected_table(rows: Sequence[dict] | Mapping[str, Sequence | pa.Array | pa.ChunkedArray], stage: str) -> pa.Table:
    """The REJECTED rows of ``stage``: from dicts with uid/reason/detail, or from those three columns
    (``{UID: [...], REASON: [...], DETAIL: [...]}``, lists or Arrow arrays: the form of large batches).
    Every reason must be a Reason (a free-string reason raises): the one way rejected rows are built."""
    if isinstance(rows, Mapping):
        uids, reasons, details = rows[UID], rows[REASON], rows[DETAIL]
        values = reasons.to_pylist() if isinstance(reasons, (pa.Array, pa.ChunkedArray)) else list(reasons)
        for reason in set(values):
            Reason(reason)  # raises on a free-string reason
        columns = {UID: uids, STAGE_COLUMN: [stage] * len(values), REASON: [str(r) for r in values], DETAIL: details}
        return pa.table(columns, schema=REJECTED.arrow_schema())
    for r in rows:
        Reason(r[REASON])  # raises on a free-string reason
    return pa.Table.from_pylist(
        [{UID: r[UID], STAGE_COLUMN: stage, REASON: str(r[REASON]), DETAIL: r.get(DETAIL)} for r in rows],
        schema=REJECTED.arrow_schema(),
    )


def count_reasons(rejected: pa.Table | None) -> dict[str, int]:
    if rejected is None or rejected.num_rows == 0:
        return {}
    counts = pc.value_counts(rejected.column(REASON)).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


@dataclass(frozen=True)
class StageDir:
    """One stage's output folder (local or s3://). Picklable: executors write shards through it."""

    uri: str
    stage: str
    storage: StorageOptions = StorageOptions()

    def __post_init__(self) -> None:
        # made absolute here, on the driver: executors run in other working folders
        object.__setattr__(self, "uri", storage.absolute(self.uri))

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return storage.filesystem(self.uri, self.storage)

    # --- state -----------------------------------------------------------------------------
    def is_complete(self) -> bool:
        return storage.exists(self.path(SUCCESS), self.storage)

    def completed_shards(self) -> dict[str, ShardStats]:
        fs, root = self._fs()
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{SHARDS}", allow_not_found=True))
        out = {}
        for info in infos:
            name = info.path.rsplit("/", 1)[-1]
            if info.type == pafs.FileType.File and name.endswith(".json") and not name.startswith("."):
                with fs.open_input_stream(info.path, compression=None) as f:
                    stats = ShardStats.from_json(f.read().decode())
                out[stats.shard] = stats
        return out

    def require_markers(self, planned: set[str], shards: dict[str, ShardStats] | None = None) -> None:
        """Raise IncompleteStageError naming the planned shards whose marker the driver cannot read."""
        shards = self.completed_shards() if shards is None else shards
        missing = sorted(set(planned) - set(shards))
        if missing:
            raise IncompleteStageError(
                f"{self.stage}: {len(missing)} of {len(planned)} planned shards left no marker readable from "
                f"the driver under {self.path(SHARDS)} (first: {', '.join(missing[:5])}); the stage is not "
                "marked complete. On a cluster the output must be on storage the driver and every executor "
                "share (s3://, or a shared mount with [storage] shared_local_paths = true); rerun to resume"
            )

    def has_shard(self, shard: str) -> bool:
        return storage.exists(self.path(SHARDS, f"{shard}.json"), self.storage)

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder; with ``overwrite`` remove what a previous run left; drop temp files."""
        fs, root = self._fs()
        if overwrite and fs.get_file_info(root).type != pafs.FileType.NotFound:
            fs.delete_dir_contents(root, missing_dir_ok=True)
        for sub in (DATA, REJECTED_DIR, SHARDS):
            fs.create_dir(f"{root}/{sub}", recursive=True)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type == pafs.FileType.File and info.base_name.startswith(".tmp-"):
                fs.delete_file(info.path)

    # --- writing ---------------------------------------------------------------------------
    def _write_parquet(self, table: pa.Table, folder: str, name: str) -> None:
        fs, root = self._fs()
        final = storage.join(root, folder, name)  # refuses a name that would leave the stage folder
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = storage.temp_name(final)
        with fs.open_output_stream(tmp) as sink:
            pq.write_table(table, sink, compression=COMPRESSION)
        fs.move(tmp, final)

    def write_shard(
        self,
        shard: str,
        kept: pa.Table,
        rejected: pa.Table,
        rows_in: int,
        kept_dir: str = DATA,
        extra: dict | None = None,
    ) -> ShardStats:
        """Write one shard's kept and rejected rows, then its marker. Idempotent (same names)."""
        stats = ShardStats(
            shard=shard,
            rows_in=rows_in,
            rows_out=kept.num_rows,
            rejected=count_reasons(rejected),
            kept_dir=kept_dir,
            extra=extra or {},
        )
        if stats.rows_in != stats.rows_out + stats.rejected_total:
            raise AccountingError(
                f"{self.stage} shard {shard}: rows_in={rows_in} but kept={kept.num_rows} "
                f"+ rejected={stats.rejected_total}"
            )
        self._write_parquet(kept, kept_dir, f"{shard}.parquet")
        self._write_parquet(rejected.cast(REJECTED.arrow_schema()), REJECTED_DIR, f"{shard}.parquet")
        storage.write_bytes_atomic(self.path(SHARDS, f"{shard}.json"), stats.to_json().encode(), self.storage)
        return stats

    def finalize(
        self,
        config: dict,
        started: float,
        inputs: list[str] | None = None,
        extra: dict | None = None,
        planned: set[str] | None = None,
    ) -> dict:
        """Sum the shard markers, check the accounting against the written data, write _stats.json
        then _SUCCESS. rows_in = rows entering the stage = sum of rows_in over shards that read the
        stage's input (shards whose kept rows go to an intermediate folder feed later shards).
        ``planned``: every shard the stage planned; one without a marker the driver can read is an
        error, never a silent zero."""
        shards = self.completed_shards()
        if planned is not None:
            self.require_markers(planned, shards)
            shards = {name: s for name, s in shards.items() if name in planned}
        rejected: Counter = Counter()
        for s in shards.values():
            rejected.update(s.rejected)
        intermediate_out = sum(s.rows_out for s in shards.values() if s.kept_dir != DATA)
        rows_in = sum(s.rows_in for s in shards.values()) - intermediate_out
        rows_out = sum(s.rows_out for s in shards.values() if s.kept_dir == DATA)
        written = self.count_rows(DATA)
        if written != rows_out:
            raise AccountingError(f"{self.stage}: markers say {rows_out} kept rows but {written} are in {DATA}/")
        if rows_in != rows_out + sum(rejected.values()):
            raise AccountingError(
                f"{self.stage}: rows_in={rows_in} != rows_out={rows_out} + rejected={sum(rejected.values())}"
            )
        stats = {
            "stage": self.stage,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rejected": dict(sorted(rejected.items())),
            "rejected_total": sum(rejected.values()),
            "shards": len([s for s in shards.values() if s.kept_dir == DATA]),
            "elapsed_seconds": round(time.time() - started, 3),
            "config": config,
        }
        if inputs is not None:
            stats["inputs"] = inputs
        if extra:
            stats.update(extra)
        text = json.dumps(stats, indent=2, sort_keys=True)
        storage.write_bytes_atomic(self.path(STATS), text.encode(), self.storage)
        storage.write_bytes_atomic(self.path(SUCCESS), b"", self.storage)
        return json.loads(text)  # exactly what a later reader of _stats.json sees

    # --- reading ---------------------------------------------------------------------------
    def files(self, sub: str = DATA) -> list[str]:
        return [f for f in storage.list_files(self.path(sub), self.storage) if f.endswith(".parquet")]

    def count_rows(self, sub: str = DATA) -> int:
        fs, _ = self._fs()
        total = 0
        for f in self.files(sub):
            _, path = storage.filesystem(f, self.storage)
            with fs.open_input_file(path) as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        return total

    def read(self, sub: str = DATA, table: Table | None = None) -> pa.Table:
        """Read a whole sub-folder into memory (tests, small stages, reports)."""
        fs, _ = self._fs()
        parts = []
        for f in self.files(sub):
            _, path = storage.filesystem(f, self.storage)
            with fs.open_input_file(path) as fh:
                parts.append(pq.read_table(fh))
        schema = table.arrow_schema() if table else (REJECTED.arrow_schema() if sub == REJECTED_DIR else None)
        if not parts:
            if schema is None:
                raise FileNotFoundError(f"no parquet files under {self.path(sub)}")
            return schema.empty_table()
        out = pa.concat_tables(parts, promote_options="default")
        return table.conform(out) if table else out

    def stats(self) -> dict:
        return json.loads(storage.read_bytes(self.path(STATS), self.storage))


def read_parquet(uri: str, options: StorageOptions | None = None) -> pa.Table:
    fs, path = storage.filesystem(uri, options)
    with fs.open_input_file(path) as fh:
        return pq.read_table(fh)
