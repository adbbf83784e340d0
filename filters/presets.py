"""Selection presets: named thresholds and keep-fractions over annotated columns, loaded from TOML.

A preset only selects (DataComp's ``apply_filter``): it becomes one SQL predicate per condition,
rendered for DuckDB or Spark SQL with the thresholds passed as bound parameters. Nothing here runs a
query; ``jobs.stages.select`` does. The built-in presets live in ``filters/presets.toml``.

Semantics, identical in both engines:
- a threshold is cast to the column's own type before comparing (a float32 score stored as 0.3 is
  not ``> 0.3``, as in pandas/numpy; Spark would otherwise widen the column to double);
- a comparison with NULL does not hold, so rows with a null value are dropped unless the condition
  says ``nulls = "keep"`` (or ``"only"``: keep just the nulls);
- a keep-fraction "top f by c" keeps the rows whose ``c`` is >= numpy's (1 - f) quantile of the
  non-null values of the input (DataComp's rule); ties at the threshold are all kept; "bottom f"
  keeps ``c`` <= the f quantile. The threshold is always one of the column's values (see
  :meth:`KeepFraction.threshold_index`), so both engines find the same number.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path

import pyarrow as pa

from curation.errors import CurationError

log = logging.getLogger(__name__)

Scalar = int | float | str | bool

BUILTIN_FILE = "presets.toml"
# TOML key -> SQL operator (the same in DuckDB and Spark SQL)
OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "=", "ne": "<>"}
_OP_WORDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
NULLS = ("drop", "keep", "only")
PRESET_KEYS = ("description", "where", "top", "bottom")


class PresetError(CurationError, ValueError):
    """A preset that cannot be used: unknown name, bad definition, or columns the input lacks."""


@dataclass(frozen=True)
class Condition:
    """``column`` must satisfy every (op, value) pair; ``nulls`` says what a null value does."""

    column: str
    ops: tuple[tuple[str, Scalar], ...]
    nulls: str = "drop"

    def describe(self) -> str:
        tests = " and ".join(f"{_OP_WORDS[op]} {value!r}" for op, value in self.ops)
        if self.nulls == "only":
            return f"{self.column} is null"
        if not tests:
            return f"{self.column} is not null"
        return f"{self.column} {tests}" + (" (or null)" if self.nulls == "keep" else "")


@dataclass(frozen=True)
class KeepFraction:
    """DataComp-style: keep the top (or bottom) ``fraction`` of the input by ``column``."""

    column: str
    fraction: float
    largest: bool = True

    def describe(self) -> str:
        percent = f"{self.fraction * 100:g}"
        return f"{'top' if self.largest else 'bottom'} {percent} % by {self.column}"

    def threshold_index(self, n: int) -> int | None:
        """Position, in ascending order of the ``n`` non-null values, of the threshold value.

        numpy's linear quantile at p = (1 - f)(n - 1) lies between sorted[floor(p)] and sorted[ceil(p)],
        so ``value >= quantile`` keeps exactly ``value >= sorted[ceil(p)]`` (bottom: floor(f(n - 1)),
        ``<=``). The fraction is taken as the decimal the user wrote (0.3, not 0.29999...)."""
        if n <= 0:
            return None
        f = Fraction(repr(self.fraction))
        if self.largest:
            return math.ceil((1 - f) * (n - 1))
        return math.floor(f * (n - 1))

    def quantile_for(self, n: int) -> float | None:
        """The q at which SQL's percentile_disc (index ceil(q n) - 1 in DuckDB and Spark) returns the
        threshold value; the half-step keeps floating error away from the rounding edge."""
        index = self.threshold_index(n)
        return None if index is None else (index + 0.5) / n


@dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    conditions: tuple[Condition, ...] = ()
    fractions: tuple[KeepFraction, ...] = ()
    source: str = "built-in"

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys([c.column for c in self.conditions] + [f.column for f in self.fractions]))

    def describe(self) -> list[str]:
        return [c.describe() for c in self.conditions] + [f.describe() for f in self.fractions]


# --- loading ------------------------------------------------------------------------------------


def _parse_value(preset: str, column: str, op: str, value: object) -> Scalar:
    if isinstance(value, (int, float, str, bool)):
        return value
    raise PresetError(f"preset {preset!r}: {column}.{op} must be a number, string or boolean; got {value!r}")


def _parse_condition(preset: str, column: str, spec: object) -> Condition:
    if not isinstance(spec, dict):
        raise PresetError(f"preset {preset!r}: the condition on {column!r} must be a table like {{ gt = 320 }}; got {spec!r}")
    unknown = sorted(set(spec) - set(OPS) - {"nulls"})
    if unknown:
        raise PresetError(f"preset {preset!r}: unknown operator(s) {unknown} on {column!r}; known: {[*OPS, 'nulls']}")
    nulls = spec.get("nulls", "drop")
    if nulls not in NULLS:
        raise PresetError(f"preset {preset!r}: nulls = {nulls!r} on {column!r}; use one of {list(NULLS)}")
    ops = tuple((op, _parse_value(preset, column, op, spec[op])) for op in OPS if op in spec)
    if nulls == "only" and ops:
        raise PresetError(f"preset {preset!r}: nulls = 'only' on {column!r} keeps only nulls; drop the comparisons")
    if nulls == "keep" and not ops:
        raise PresetError(f"preset {preset!r}: nulls = 'keep' without a comparison on {column!r} keeps every row")
    return Condition(column, ops, nulls)


def _parse_fractions(preset: str, spec: object, largest: bool) -> tuple[KeepFraction, ...]:
    key = "top" if largest else "bottom"
    if not isinstance(spec, dict):
        raise PresetError(f"preset {preset!r}: [{preset}.{key}] must be a table of column = fraction")
    out = []
    for column, fraction in spec.items():
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise PresetError(f"preset {preset!r}: {key} fraction for {column!r} must be in (0, 1]; got {fraction!r}")
        out.append(KeepFraction(column, float(fraction), largest))
    return tuple(out)


def parse_preset(name: str, spec: object, source: str) -> Preset:
    if not isinstance(spec, dict):
        raise PresetError(f"{source}: preset {name!r} must be a table ([{name}]); got {spec!r}")
    unknown = sorted(set(spec) - set(PRESET_KEYS))
    if unknown:
        raise PresetError(f"{source}: preset {name!r} has unknown key(s) {unknown}; known: {list(PRESET_KEYS)}")
    where = spec.get("where", {})
    if not isinstance(where, dict):
        raise PresetError(f"{source}: [{name}.where] must be a table of column = {{ op = value }}")
    preset = Preset(
        name=name,
        description=str(spec.get("description", "")),
        conditions=tuple(_parse_condition(name, column, cond) for column, cond in where.items()),
        fractions=_parse_fractions(name, spec.get("top", {}), True) + _parse_fractions(name, spec.get("bottom", {}), False),
        source=source,
    )
    if not preset.conditions and not preset.fractions:
        raise PresetError(f"{source}: preset {name!r} selects nothing: give [{name}.where], [{name}.top] or [{name}.bottom]")
    return preset


def parse_presets(text: str, source: str) -> dict[str, Preset]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"preset file {source} is not valid TOML: {e}") from e
    return {name: parse_preset(name, spec, source) for name, spec in data.items()}


def builtin_presets() -> dict[str, Preset]:
    text = resources.files("filters").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    return parse_presets(text, "built-in")


def load_presets(preset_file: str | None = None) -> dict[str, Preset]:
    """The built-in presets, then those of ``preset_file`` (a name defined again replaces the built-in)."""
    presets = builtin_presets()
    if preset_file:
        try:
            text = Path(preset_file).read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise PresetError(f"preset file not found: {preset_file}") from e
        custom = parse_presets(text, preset_file)
        for name in sorted(set(custom) & set(presets)):
            log.warning("preset file %s redefines the built-in preset %r", preset_file, name)
        presets.update(custom)
    return presets


def get_preset(presets: Mapping[str, Preset], name: str) -> Preset:
    if name not in presets:
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(sorted(presets))}")
    return presets[name]


# --- checking against an input and rendering as SQL --------------------------------------------


def _sql_type(column: str, arrow_type: pa.DataType) -> str:
    for check, name in (
        (pa.types.is_int8, "TINYINT"),
        (pa.types.is_int16, "SMALLINT"),
        (pa.types.is_int32, "INT"),
        (pa.types.is_int64, "BIGINT"),
        (pa.types.is_float32, "FLOAT"),
        (pa.types.is_float64, "DOUBLE"),
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_string, "STRING"),
        (pa.types.is_large_string, "STRING"),
    ):
        if check(arrow_type):
            return name
    raise PresetError(f"column {column!r} has type {arrow_type}, which presets cannot compare (numbers, strings, booleans)")


def _coerce(preset: str, column: str, sql_type: str, value: Scalar) -> Scalar:
    """The parameter value for ``value`` compared with a column of ``sql_type``; clear error on a mismatch."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if sql_type in ("TINYINT", "SMALLINT", "INT", "BIGINT"):
        if numeric and float(value).is_integer():
            return int(value)
        raise PresetError(f"preset {preset!r}: {column!r} is an integer column; {value!r} is not an integer")
    if sql_type in ("FLOAT", "DOUBLE"):
        if numeric:
            return float(value)
        raise PresetError(f"preset {preset!r}: {column!r} is a number column; {value!r} is not a number")
    expected = bool if sql_type == "BOOLEAN" else str
    if not isinstance(value, expected):
        raise PresetError(f"preset {preset!r}: {column!r} is a {sql_type.lower()} column; {value!r} is not one")
    return value


def check_columns(preset: Preset, schema: pa.Schema, where: str) -> dict[str, str]:
    """Column -> SQL type for every column the preset uses; PresetError names what ``where`` lacks."""
    missing = [c for c in preset.columns if c not in schema.names]
    if missing:
        raise PresetError(
            f"preset {preset.name!r} uses column(s) {missing} that {where} lacks; available: {', '.join(schema.names)}"
        )
    return {c: _sql_type(c, schema.field(c).type) for c in preset.columns}


@dataclass(frozen=True)
class Dialect:
    """How identifiers are quoted and parameters marked; everything else is common SQL."""

    name: str
    quote: str
    param_prefix: str

    def ident(self, column: str) -> str:
        return f"{self.quote}{column.replace(self.quote, self.quote * 2)}{self.quote}"

    def marker(self, name: str) -> str:
        return f"{self.param_prefix}{name}"


DUCKDB = Dialect("duckdb", '"', "$")
SPARK = Dialect("spark", "`", ":")


@dataclass(frozen=True)
class SqlFilter:
    """One SQL predicate per condition and keep-fraction (preset order) and the parameters they bind."""

    clauses: tuple[str, ...]
    labels: tuple[str, ...]
    params: dict[str, Scalar]

    @property
    def where(self) -> str:
        return " AND ".join(f"({c})" for c in self.clauses) or "TRUE"


class _Params:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: dict[str, Scalar] = {}

    def bind(self, value: Scalar, sql_type: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"CAST({self.dialect.marker(name)} AS {sql_type})"


def _condition_sql(preset: Preset, cond: Condition, sql_type: str, dialect: Dialect, params: _Params) -> str:
    col = dialect.ident(cond.column)
    tests = [f"{col} {OPS[op]} {params.bind(_coerce(preset.name, cond.column, sql_type, v), sql_type)}" for op, v in cond.ops]
    if cond.nulls == "only":
        return f"{col} IS NULL"
    if not tests:
        return f"{col} IS NOT NULL"
    joined = " AND ".join(tests)
    return f"{col} IS NULL OR ({joined})" if cond.nulls == "keep" else joined


def _fraction_sql(frac: KeepFraction, threshold: Scalar | None, sql_type: str, dialect: Dialect, params: _Params) -> str:
    if threshold is None:  # no non-null value in the input: nothing to keep
        return "FALSE"
    value = int(threshold) if sql_type in ("TINYINT", "SMALLINT", "INT", "BIGINT") else threshold
    return f"{dialect.ident(frac.column)} {'>=' if frac.largest else '<='} {params.bind(value, sql_type)}"


def render(
    preset: Preset,
    types: Mapping[str, str],
    dialect: Dialect,
    thresholds: Mapping[KeepFraction, Scalar | None] | None = None,
) -> SqlFilter:
    """The preset as SQL predicates. ``types`` comes from :func:`check_columns`; ``thresholds`` holds the
    value each keep-fraction resolved to on the input (required when the preset has fractions)."""
    params = _Params(dialect)
    clauses = [_condition_sql(preset, c, types[c.column], dialect, params) for c in preset.conditions]
    for frac in preset.fractions:
        if thresholds is None or frac not in thresholds:
            raise PresetError(f"preset {preset.name!r}: the threshold of '{frac.describe()}' was not resolved")
        clauses.append(_fraction_sql(frac, thresholds[frac], types[frac.column], dialect, params))
    return SqlFilter(tuple(clauses), tuple(preset.describe()), params.values)
