"""`select`: a preset over annotated parquet shards -> a sorted uid list, counts, and optionally shards.

The query runs in an :class:`Engine`: DuckDB over the parquet files (embedded default, here) or Spark
SQL (``jobs/select.py``). Both run the same SQL, built by ``filters.presets.render``. Output folder:

    OUT/uids/part-*.parquet   the selected uids, sorted (parts in name order are in uid order)
    OUT/data/part-*.parquet   --materialize: the selected rows with their images, rows_per_shard each
    OUT/wds/part-*.tar        --materialize --webdataset: the same shards as webdataset tars
    OUT/_stats.json           preset, engine, rows_in, rows_out, rows passing each condition, thresholds
    OUT/_SUCCESS              written last

Selection and materialisation are separate steps (DataComp's apply_filter, then a resharder): the shards
are written from the uid list, so the engine that selected does not matter.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation.errors import CurationError
from curation import storage
from curation.config import Config
from curation.stage import COMPRESSION, DATA, STATS, SUCCESS, StageDir, read_parquet
from curation.storage import StorageOptions
from filters.presets import (
    DUCKDB,
    Dialect,
    KeepFraction,
    Preset,
    PresetError,
    Scalar,
    SqlFilter,
    check_columns,
    get_preset,
    load_presets,
    render,
)
from schemas.tables import UID_LIST

log = logging.getLogger(__name__)

STAGE = "select"
VIEW = "selection_input"
UIDS = "uids"
WEBDATASET = "wds"
UID = "uid"
OUTPUT_NAMES = (UIDS, DATA, WEBDATASET, STATS, SUCCESS)
_BATCH_ROWS = 65_536
_IMAGE_EXTENSIONS = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"RIFF", "webp"))


class SelectError(CurationError, ValueError):
    """A selection that cannot run as asked: no input files, no uid column, an output holding another one."""


class Engine(Protocol):
    """What a selection needs from a SQL engine that has the input registered as ``VIEW``."""

    dialect: Dialect
    name: str

    def query_one(self, sql: str, params: Mapping[str, Scalar] | None = None) -> tuple: ...

    def write_uids(self, sql: str, params: Mapping[str, Scalar], out_dir: str) -> list[str]:
        """Run ``sql`` (uids in order) and write them as parquet parts under ``out_dir``; return the parts."""
        ...


# --- input ------------------------------------------------------------------------------------


def input_files(uri: str, options: StorageOptions | None = None) -> list[str]:
    """The parquet files of an input: a stage folder (its data/), a folder, a file or a glob."""
    if storage.is_dir(storage.join(uri, DATA), options):
        files = StageDir(uri, STAGE, options or StorageOptions()).files()
    else:
        files = [f for f in storage.expand_inputs([uri], options) if f.endswith(".parquet")]
    if not files:
        raise SelectError(f"no parquet files in {uri} (give an annotated stage folder, a folder or parquet files)")
    return files


def _dataset(files: list[str], options: StorageOptions | None) -> pads.Dataset:
    fs, _ = storage.filesystem(files[0], options)
    return pads.dataset([storage.filesystem(f, options)[1] for f in files], filesystem=fs, format="parquet")


def input_schema(files: list[str], options: StorageOptions | None = None) -> pa.Schema:
    return _dataset(files, options).schema


def register_parquet(con: duckdb.DuckDBPyConnection, name: str, files: list[str], options: StorageOptions | None) -> None:
    """Make ``files`` the view ``name``: DuckDB's own reader for local files; for s3:// an Arrow dataset
    over the project's pyarrow S3 filesystem (DuckDB's httpfs would download an extension at run time)."""
    if storage.is_s3(files[0]):
        con.register(name, _dataset(files, options))
    else:
        con.read_parquet([storage.filesystem(f)[1] for f in files]).create_view(name, replace=True)


# --- writing ----------------------------------------------------------------------------------


@contextmanager
def _atomic_output(uri: str, options: StorageOptions | None):
    """An output stream under a temporary name in the target folder, renamed onto ``uri`` on success."""
    fs, path = storage.filesystem(uri, options)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = storage.temp_name(path)  # a failed write leaves it behind; select clears OUT before writing
    with fs.open_output_stream(tmp) as sink:
        yield sink
    fs.move(tmp, path)


def write_parquet(
    uri: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema, options: StorageOptions | None, dictionary: bool = True
) -> int:
    """Stream ``batches`` (cast to ``schema``) into one parquet file, atomically; return its row count.
    ``dictionary=False`` for columns of distinct values (uids), where dictionary pages only cost time."""
    rows = 0
    writer_options = {"compression": COMPRESSION, "use_dictionary": dictionary}
    with _atomic_output(uri, options) as sink, pq.ParquetWriter(sink, schema, **writer_options) as writer:
        for batch in batches:
            writer.write_batch(batch.cast(schema))
            rows += batch.num_rows
    return rows


def part_name(index: int, ext: str = "parquet") -> str:
    return f"part-{index:05d}.{ext}"


def even_shards(batches: Iterable[pa.RecordBatch], rows_per_shard: int) -> Iterator[pa.Table]:
    """Regroup a stream of batches into tables of exactly ``rows_per_shard`` rows (the last may hold fewer)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, rows_per_shard - held)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows_per_shard:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def image_extension(data: bytes) -> str:
    for magic, ext in _IMAGE_EXTENSIONS:
        if data.startswith(magic):
            return ext
    return "bin"


def webdataset_members(row: dict) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of one sample: ``uid.<image ext>``, ``uid.txt`` (caption), ``uid.json`` (other columns)."""
    key = row[UID]
    image = row.get("image_bytes")
    if image:
        yield f"{key}.{image_extension(image)}", image
    if row.get("text") is not None:
        yield f"{key}.txt", row["text"].encode("utf-8")
    meta = {k: v for k, v in row.items() if k not in ("image_bytes",)}
    yield f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def write_webdataset(uri: str, table: pa.Table, options: StorageOptions | None) -> None:
    """One webdataset tar for a shard; fixed mtime/owner so the same rows give the same bytes."""
    with _atomic_output(uri, options) as sink, tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for row in table.to_pylist():
            for name, data in webdataset_members(row):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tar.addfile(info, io.BytesIO(data))


# --- DuckDB -----------------------------------------------------------------------------------


class DuckDBEngine:
    """DuckDB over the input (parquet files or an Arrow table) registered as ``VIEW``."""

    dialect = DUCKDB
    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection, options: StorageOptions | None = None) -> None:
        self.con = con
        self.options = options

    @classmethod
    def for_files(cls, files: list[str], options: StorageOptions | None = None) -> DuckDBEngine:
        con = duckdb.connect()
        register_parquet(con, VIEW, files, options)
        return cls(con, options)

    @classmethod
    def for_table(cls, table: pa.Table) -> DuckDBEngine:
        con = duckdb.connect()
        con.register(VIEW, table)
        return cls(con)

    def query_one(self, sql: str, params: Mapping[str, Scalar] | None = None) -> tuple:
        return self.con.sql(sql, params=dict(params or {})).fetchall()[0]

    def reader(self, sql: str, params: Mapping[str, Scalar] | None = None) -> pa.RecordBatchReader:
        return self.con.sql(sql, params=dict(params or {})).to_arrow_reader(_BATCH_ROWS)

    def write_uids(self, sql: str, params: Mapping[str, Scalar], out_dir: str) -> list[str]:
        part = storage.join(out_dir, part_name(0))
        write_parquet(part, self.reader(sql, params), UID_LIST.arrow_schema(), self.options, dictionary=False)
        return [part]


# --- selection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What a preset keeps of an input: the counts, and the SQL that selects it."""

    preset: Preset
    engine: str
    sql: SqlFilter
    thresholds: dict[str, Scalar | None]
    rows_in: int
    rows_out: int
    passing: dict[str, int] = field(default_factory=dict)  # condition -> rows it keeps on its own

    def to_dict(self) -> dict:
        return {
            "preset": self.preset.name,
            "description": self.preset.description,
            "definition": self.preset.describe(),
            "preset_source": self.preset.source,
            "engine": self.engine,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "passing": self.passing,
            "thresholds": self.thresholds,
            "where": self.sql.where,
            "params": self.sql.params,
        }


def resolve_thresholds(engine: Engine, fractions: tuple[KeepFraction, ...]) -> dict[KeepFraction, Scalar | None]:
    """The value at which each keep-fraction cuts the input (see KeepFraction.threshold_index)."""
    if not fractions:
        return {}
    ident = engine.dialect.ident
    counts = engine.query_one("SELECT " + ", ".join(f"COUNT({ident(f.column)})" for f in fractions) + f" FROM {VIEW}")
    out: dict[KeepFraction, Scalar | None] = {}
    for frac, n in zip(fractions, counts):
        q = frac.quantile_for(int(n))
        if q is None:
            out[frac] = None
            continue
        sql = f"SELECT percentile_disc({q!r}) WITHIN GROUP (ORDER BY {ident(frac.column)}) FROM {VIEW}"
        out[frac] = engine.query_one(sql)[0]
    return out


def _count_sql(flt: SqlFilter) -> str:
    hits = [f"SUM(CASE WHEN {c} THEN 1 ELSE 0 END)" for c in (flt.where, *flt.clauses)]
    return f"SELECT COUNT(*), {', '.join(hits)} FROM {VIEW}"


def count(engine: Engine, preset: Preset, schema: pa.Schema, where: str = "the input") -> Selection:
    """Resolve the preset on the input and count what it keeps, overall and per condition (one scan)."""
    thresholds = resolve_thresholds(engine, preset.fractions)
    flt = render(preset, check_columns(preset, schema, where), engine.dialect, thresholds)
    rows_in, rows_out, *passing = (int(v or 0) for v in engine.query_one(_count_sql(flt), flt.params))
    return Selection(
        preset=preset,
        engine=engine.name,
        sql=flt,
        thresholds={f.describe(): v for f, v in thresholds.items()},
        rows_in=rows_in,
        rows_out=rows_out,
        passing=dict(zip(flt.labels, passing)),
    )


def uid_query(engine: Engine, flt: SqlFilter) -> str:
    uid = engine.dialect.ident(UID)
    return f"SELECT {uid} FROM {VIEW} WHERE {flt.where} ORDER BY {uid}"


@dataclass(frozen=True)
class Materialize:
    rows_per_shard: int = 10_000
    webdataset: bool = False


def materialize(
    files: list[str], uid_files: list[str], out: str, plan: Materialize, options: StorageOptions | None = None
) -> dict:
    """Write the input rows whose uid is in the uid list, sorted by uid, as even parquet shards
    (and webdataset tars). Runs in DuckDB whichever engine made the list."""
    engine = DuckDBEngine.for_files(files, options)
    register_parquet(engine.con, "selected_uids", uid_files, options)
    schema = input_schema(files, options)
    sql = f'SELECT * FROM {VIEW} WHERE "{UID}" IN (SELECT "{UID}" FROM selected_uids) ORDER BY "{UID}"'
    shards = rows = 0
    for index, table in enumerate(even_shards(engine.reader(sql), plan.rows_per_shard)):
        table = table.cast(schema)
        write_parquet(storage.join(out, DATA, part_name(index)), table.to_batches(), schema, options)
        if plan.webdataset:
            write_webdataset(storage.join(out, WEBDATASET, part_name(index, "tar")), table, options)
        shards, rows = shards + 1, rows + table.num_rows
    log.info("select: materialized %d rows in %d shards under %s", rows, shards, out)
    return {"shards": shards, "rows": rows, "rows_per_shard": plan.rows_per_shard, "webdataset": plan.webdataset}


def _previous(out: str, options: StorageOptions | None, wanted: dict, overwrite: bool) -> dict | None:
    """A complete earlier selection of the same thing (reused), or None after clearing ``out``."""
    stage = StageDir(out, STAGE, options or StorageOptions())
    if stage.is_complete() and not overwrite:
        stats = stage.stats()
        held = {k: stats.get(k) for k in wanted}
        if held == wanted:
            log.info("%s already holds this selection (_SUCCESS present); nothing to do", out)
            return stats
        raise SelectError(
            f"{out} already holds a different selection (preset {stats.get('preset')!r} of {stats.get('input')}); "
            "pass --overwrite or choose another --output"
        )
    fs, root = storage.filesystem(out, options)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return None
    foreign = sorted(
        i.base_name for i in fs.get_file_info(pafs.FileSelector(root))
        if i.base_name not in OUTPUT_NAMES and not i.base_name.startswith(".tmp-")
    )
    if foreign:  # never wipe a folder that is not a selection
        raise SelectError(f"{out} holds files that are not a selection's ({', '.join(foreign[:5])}); choose a new --output")
    fs.delete_dir_contents(root)
    return None


def run_select(
    engine: Engine,
    preset: Preset,
    input_uri: str,
    files: list[str],
    out: str,
    options: StorageOptions | None = None,
    plan: Materialize | None = None,
    overwrite: bool = False,
) -> dict:
    """Select with ``engine`` into ``out`` (uid list, stats, optional shards); return _stats.json's content."""
    started = time.time()
    schema = input_schema(files, options)
    if UID not in schema.names:
        raise SelectError(f"{input_uri} has no {UID!r} column; available: {', '.join(schema.names)}")
    wanted = {
        "input": input_uri,
        "preset": preset.name,
        "definition": preset.describe(),
        "materialized_as": None if plan is None else {"rows_per_shard": plan.rows_per_shard, "webdataset": plan.webdataset},
    }
    previous = _previous(out, options, wanted, overwrite)
    if previous is not None:
        return previous
    selection = count(engine, preset, schema, where=input_uri)
    parts = engine.write_uids(uid_query(engine, selection.sql), selection.sql.params, storage.join(out, UIDS))
    written = sum(_num_rows(p, options) for p in parts)
    if written != selection.rows_out:
        raise RuntimeError(f"select: counted {selection.rows_out} selected rows but wrote {written} uids")
    stats = {"stage": STAGE, **wanted, **selection.to_dict(), "input_files": len(files), "uid_files": len(parts)}
    if plan is not None:
        stats["materialized"] = materialize(files, parts, out, plan, options)
    stats["elapsed_seconds"] = round(time.time() - started, 3)
    text = json.dumps(stats, indent=2, sort_keys=True)
    storage.write_bytes_atomic(storage.join(out, STATS), text.encode(), options)
    storage.write_bytes_atomic(storage.join(out, SUCCESS), b"", options)
    log.info("select: preset %s kept %d of %d rows (%s)", preset.name, selection.rows_out, selection.rows_in, engine.name)
    return json.loads(text)


def keep_counts(engine: Engine, presets: Mapping[str, Preset], schema: pa.Schema) -> dict[str, Selection | str]:
    """What every preset keeps of the engine's input; a preset the input cannot answer gets the reason instead."""
    out: dict[str, Selection | str] = {}
    for name, preset in presets.items():
        try:
            out[name] = count(engine, preset, schema)
        except PresetError as e:  # e.g. a custom preset on a column this input lacks
            out[name] = str(e)
    return out


def overview(cfg: Config, input_uri: str | None = None) -> list[dict]:
    """One row per preset (``curation presets list``); with an input, what each keeps of it."""
    options = cfg.storage.resolved()
    presets = load_presets(cfg.select.preset_file)
    counts: dict[str, Selection | str] = {}
    if input_uri:
        files = input_files(input_uri, options)
        counts = keep_counts(DuckDBEngine.for_files(files, options), presets, input_schema(files, options))
    rows = []
    for name, preset in presets.items():
        row = {"name": name, "description": preset.description, "source": preset.source, "conditions": preset.describe()}
        result = counts.get(name)
        if isinstance(result, Selection):
            share = result.rows_out / result.rows_in if result.rows_in else 0.0
            row["keeps"] = f"{result.rows_out:,} of {result.rows_in:,} ({share:.1%})"
        elif result is not None:
            row["keeps"] = f"n/a: {result}"
        rows.append(row)
    return rows


def show(cfg: Config, name: str, input_uri: str | None = None) -> dict:
    """A preset's definition and DuckDB SQL (``curation presets show``); with an input, its counts."""
    options = cfg.storage.resolved()
    preset = get_preset(load_presets(cfg.select.preset_file), name)
    out = {"preset": name, "description": preset.description, "preset_source": preset.source, "definition": preset.describe()}
    if input_uri:
        files = input_files(input_uri, options)
        out.update(count(DuckDBEngine.for_files(files, options), preset, input_schema(files, options), input_uri).to_dict())
    return out


def _num_rows(uri: str, options: StorageOptions | None) -> int:
    fs, path = storage.filesystem(uri, options)
    return pq.read_metadata(path, filesystem=fs).num_rows


def read_uids(out: str, options: StorageOptions | None = None) -> list[str]:
    """The uid list of a selection folder, in order."""
    stage = StageDir(out, STAGE, options or StorageOptions())
    return [u for f in stage.files(UIDS) for u in read_parquet(f, options).column(UID).to_pylist()]
