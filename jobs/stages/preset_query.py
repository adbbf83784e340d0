"""The preset query engine that ``select`` and the report share: the input registered as one SQL view,
DuckDB over its parquet files (the embedded default; ``jobs/select.py`` brings Spark SQL), and the
counting of a preset on it (thresholds of keep-fractions resolved, rows kept overall and per condition).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from curation import storage
from curation.storage import StorageOptions
from curation.output.shards import part_name, write_parquet
from filters.presets import DUCKDB, Dialect, KeepFraction, Preset, PresetError, Scalar, SqlFilter, check_columns, render
from schemas import UID_LIST

VIEW = "selection_input"
_BATCH_ROWS = 65_536


class Engine(Protocol):
    """What a selection needs from a SQL engine that has the input registered as ``VIEW``."""

    dialect: Dialect
    name: str

    def query_one(self, sql: str, params: Mapping[str, Scalar] | None = None) -> tuple: ...

    def write_uids(self, sql: str, params: Mapping[str, Scalar], out_dir: str) -> list[str]:
        """Run ``sql`` (uids in order) and write them as parquet parts under ``out_dir``; return the parts."""
        ...


# --- input ------------------------------------------------------------------------------------


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


def keep_counts(engine: Engine, presets: Mapping[str, Preset], schema: pa.Schema) -> dict[str, Selection | str]:
    """What every preset keeps of the engine's input; a preset the input cannot answer gets the reason instead."""
    out: dict[str, Selection | str] = {}
    for name, preset in presets.items():
        try:
            out[name] = count(engine, preset, schema)
        except PresetError as e:  # e.g. a custom preset on a column this input lacks
            out[name] = str(e)
    return out
