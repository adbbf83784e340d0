"""`report`: one self-contained HTML page about a run (RUN_ROOT with one folder per stage).

It shows the funnel (rows per stage and per rejection reason, straight from each ``_stats.json``), a balance
stage's entries by rows per entry before and after balancing (log axes, from its ``_stats.json``), histograms
of the annotated scores (matplotlib, embedded PNG), what each preset keeps, and sample thumbnails per preset
and per rejection reason. Queries run in DuckDB over the stage parquet files; the page has no scripts and
loads nothing: images are data URIs, and every caption, URL and detail is escaped by the template.

A rejected row carries only uid/reason/detail, so its sample shows the row as the stage received it: the
uid is looked up in the previous stage's data (with its image when that stage stored images). Rows a safety
hash list rejected are never sampled (no caption, URL or thumbnail of them is shown): the page counts them per
list, from the rejected rows' details, and never shows a list's entries.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from jinja2 import Environment, PackageLoader
from matplotlib.figure import Figure
from PIL import Image

from curation import storage
from jobs.stages.config import Config, ReportOptions
from curation.errors import InputError, MissingFileError
from jobs.stages.preset_query import VIEW, DuckDBEngine, Selection, input_schema, keep_counts, register_parquet
from curation.stage import REJECTED_DIR, STATS, StageDir
from curation.storage import StorageOptions
from filters.presets import Preset, load_presets
from schemas import ANNOTATED, DETAIL, UID, Reason

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
MANIFEST = "_manifest.json"
# the annotated columns whose distribution the report draws, in schema order (Column.histogram)
HISTOGRAM_COLUMNS = tuple(c.name for c in ANNOTATED.columns if c.histogram)
SAMPLE_COLUMNS = (UID, "text", "url", "image_bytes")
BLOCKLISTED = (Reason.BLOCKLISTED_URL.value, Reason.BLOCKLISTED_IMAGE.value)  # counted per list, never sampled


@dataclass(frozen=True)
class StageSummary:
    name: str
    rows_in: int
    rows_out: int
    rejected: dict[str, int]

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True)
class Sample:
    uid: str
    text: str | None = None
    url: str | None = None
    detail: str | None = None
    thumbnail: str | None = None  # data URI


@dataclass(frozen=True)
class Histogram:
    column: str
    edges: np.ndarray
    counts: np.ndarray
    png: str


@dataclass(frozen=True)
class EntryFrequency:
    """A balance stage's entries by rows per entry, before and after balancing, on power-of-two bins."""

    stage: str
    t: int
    edges: np.ndarray  # rows per entry: bin k holds the entries with edges[k] <= rows < edges[k + 1]
    before: np.ndarray  # entries per bin
    after: np.ndarray
    png: str


@dataclass(frozen=True)
class PresetSummary:
    name: str
    description: str
    definition: list[str]
    rows_in: int | None = None
    rows_out: int | None = None
    problem: str | None = None  # why the preset cannot run on this run's table
    samples: list[Sample] = field(default_factory=list)


@dataclass(frozen=True)
class RejectionSummary:
    stage: str
    reason: str
    count: int
    samples: list[Sample]


@dataclass
class Report:
    run_root: str
    stages: list[StageSummary]
    funnel_png: str | None = None
    annotated_stage: str | None = None
    histograms: list[Histogram] = field(default_factory=list)
    entry_frequency: list[EntryFrequency] = field(default_factory=list)  # one per balance stage
    presets: list[PresetSummary] = field(default_factory=list)
    rejections: list[RejectionSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    safety: list[tuple[str, str, int]] = field(default_factory=list)  # (list, kind, rows it rejected) per safety list


# --- reading the run ----------------------------------------------------------------------------


def find_stages(run_root: str, options: StorageOptions | None) -> dict[str, dict]:
    """Stage name -> _stats.json of every sub-folder that holds one (selections and inputs are skipped)."""
    fs, root = storage.filesystem(run_root, options)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise MissingFileError(f"run folder not found: {run_root}")
    if storage.exists(storage.join(run_root, STATS), options):
        raise InputError(f"{run_root} is a stage folder, not a run folder: give the run root that holds it ({storage.absolute(run_root).rsplit('/', 1)[0]})")
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if info.type != pafs.FileType.Directory or info.base_name.startswith((".", "_")):
            continue
        stats_uri = storage.join(run_root, info.base_name, STATS)
        if storage.exists(stats_uri, options):
            stats = json.loads(storage.read_bytes(stats_uri, options))
            if "rejected" in stats:  # a stage, not a `select` output
                found[info.base_name] = stats
    if not found:
        raise InputError(f"{run_root} holds no stage folders (a run root has one folder per stage, each with {STATS})")
    return found


def stage_order(stats: dict[str, dict], manifest_order: list[str]) -> list[str]:
    """The manifest's order for the stages it names, then the others by falling rows_in (a funnel)."""
    listed = [name for name in manifest_order if name in stats]
    rest = sorted((n for n in stats if n not in listed), key=lambda n: (-stats[n]["rows_in"], n))
    return listed + rest


def _manifest_order(run_root: str, options: StorageOptions | None) -> list[str]:
    uri = storage.join(run_root, MANIFEST)
    if not storage.exists(uri, options):
        return []
    return list(json.loads(storage.read_bytes(uri, options)).get("stages", {}))


def summaries(run_root: str, options: StorageOptions | None) -> list[StageSummary]:
    stats = find_stages(run_root, options)
    return [
        StageSummary(name, int(stats[name]["rows_in"]), int(stats[name]["rows_out"]), dict(stats[name]["rejected"]))
        for name in stage_order(stats, _manifest_order(run_root, options))
    ]


# --- charts and thumbnails ----------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same bytes each run
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def funnel_chart(stages: list[StageSummary]) -> str:
    labels = ["input"] + [s.name for s in stages]
    values = [stages[0].rows_in] + [s.rows_out for s in stages]
    fig = Figure(figsize=(8, 0.5 * len(labels) + 1), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], padding=3)
    ax.set_xlabel("rows")
    ax.set_title("rows after each stage")
    ax.margins(x=0.15)
    return _png(fig)


def histogram_chart(column: str, edges: np.ndarray, counts: np.ndarray) -> str:
    fig = Figure(figsize=(4, 2.6), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, color="#55a868")
    ax.set_title(column, fontsize=10)
    ax.set_ylabel("rows")
    return _png(fig)


def entry_frequency_figure(stage: str, t: int, edges: np.ndarray, before: np.ndarray, after: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.stairs(before, edges, baseline=None, color="#c44e52", linewidth=1.6, label="before balancing")
    ax.stairs(after, edges, baseline=None, color="#4c72b0", linewidth=1.6, label="after balancing")
    ax.axvline(t, color="#777", linestyle="--", linewidth=1, label=f"t = {t:,}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rows per entry")
    ax.set_ylabel("entries")
    ax.set_title(f"{stage}: entry frequency", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def thumbnail(data: bytes | None, px: int) -> str | None:
    """A small JPEG data URI, or None when there is no image or it does not decode."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (px, px))  # JPEG: decode at a reduced scale
            small = img.convert("RGB")
            small.thumbnail((px, px))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        log.debug("report: no thumbnail: %s", e)
        return None
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# --- queries ------------------------------------------------------------------------------------


def histogram_counts(engine: DuckDBEngine, column: str, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Equal-width bins between the column's min and max, counted in SQL (the column never leaves DuckDB).
    Nulls, NaN and infinities are left out."""
    value = f'CAST("{column}" AS DOUBLE)'
    finite = f"isfinite({value})"
    lo, hi = engine.query_one(f"SELECT min({value}), max({value}) FROM {VIEW} WHERE {finite}")
    if lo is None:
        return None
    lo, hi = float(lo), float(hi)
    if hi == lo:  # one value: one bin around it
        bins, lo, width = 1, lo - 0.5, 1.0
    else:
        width = (hi - lo) / bins
    sql = (
        f"SELECT LEAST(CAST(FLOOR(({value} - $lo) / $width) AS BIGINT), {bins - 1}) AS b, COUNT(*) "
        f"FROM {VIEW} WHERE {finite} GROUP BY b"
    )
    counts = np.zeros(bins, dtype=np.int64)
    for b, n in engine.con.sql(sql, params={"lo": lo, "width": width}).fetchall():
        counts[b] = n
    return lo + width * np.arange(bins + 1), counts


def _samples(con: duckdb.DuckDBPyConnection, sql: str, params: dict, opts: ReportOptions) -> list[Sample]:
    rows = con.sql(sql, params=params).to_arrow_table().to_pylist()
    return [
        Sample(
            uid=r[UID],
            text=r.get("text"),
            url=r.get("url"),
            detail=r.get(DETAIL),
            thumbnail=thumbnail(r.get("image_bytes"), opts.thumbnail_px),
        )
        for r in rows
    ]


def _sample_columns(names: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in SAMPLE_COLUMNS if c in names)


def preset_summaries(
    engine: DuckDBEngine, presets: dict[str, Preset], schema: pa.Schema, opts: ReportOptions
) -> list[PresetSummary]:
    out = []
    for name, result in keep_counts(engine, presets, schema).items():
        preset = presets[name]
        if not isinstance(result, Selection):
            out.append(PresetSummary(name, preset.description, preset.describe(), problem=result))
            continue
        sql = f"SELECT {_sample_columns(schema.names)} FROM {VIEW} WHERE {result.sql.where} ORDER BY uid LIMIT {opts.samples}"
        samples = _samples(engine.con, sql, result.sql.params, opts)
        out.append(PresetSummary(name, preset.description, preset.describe(), result.rows_in, result.rows_out, None, samples))
    return out


def rejection_summaries(
    stage: StageDir, upstream: StageDir | None, counts: dict[str, int], opts: ReportOptions
) -> list[RejectionSummary]:
    """Up to ``opts.samples`` rejected rows per reason (lowest uids), shown as the previous stage had them."""
    files = stage.files(REJECTED_DIR)
    if not files or not counts:
        return []
    con = duckdb.connect()
    register_parquet(con, "rejected", files, stage.storage)
    picked = con.sql(
        "SELECT reason, uid, detail FROM rejected WHERE NOT list_contains($blocklisted, reason) "
        "QUALIFY row_number() OVER (PARTITION BY reason ORDER BY uid, detail) <= $k",
        params={"k": opts.samples, "blocklisted": list(BLOCKLISTED)},
    ).fetchall()
    upstream_files = upstream.files() if upstream is not None else []
    found: dict[str, Sample] = {}
    if upstream_files:
        register_parquet(con, "upstream", upstream_files, stage.storage)
        names = input_schema(upstream_files, stage.storage).names
        if UID in names:
            sql = f"SELECT {_sample_columns(names)} FROM upstream WHERE list_contains($uids, uid)"
            found = {s.uid: s for s in _samples(con, sql, {"uids": [u for _, u, _ in picked]}, opts)}
    by_reason: dict[str, list[Sample]] = {}
    for reason, uid, detail in sorted(picked, key=lambda r: (r[0], r[1], r[2] or "")):
        base = found.get(uid, Sample(uid))
        by_reason.setdefault(reason, []).append(Sample(uid, base.text, base.url, detail, base.thumbnail))
    return [RejectionSummary(stage.stage, reason, counts[reason], by_reason.get(reason, [])) for reason in sorted(counts)]


def safety_counts(stages: list[StageDir], cfg: Config) -> list[tuple[str, str, int]]:
    """(list name, kind, rows rejected) for every configured safety list and every list a stage's rejected
    rows name (their detail is the list's ``detail``), counted from the written rows."""
    counts = {entry.detail: 0 for entry in cfg.safety.lists}
    kinds = {entry.detail: (entry.name, entry.kind) for entry in cfg.safety.lists}
    for stage in stages:
        files = stage.files(REJECTED_DIR)
        if files:
            con = duckdb.connect()
            register_parquet(con, "rejected", files, stage.storage)
            sql = "SELECT detail, count(*) FROM rejected WHERE list_contains($blocklisted, reason) GROUP BY detail"
            for detail, n in con.sql(sql, params={"blocklisted": list(BLOCKLISTED)}).fetchall():
                counts[detail] = counts.get(detail, 0) + n
    out = []
    for detail, n in sorted(counts.items()):
        name, kind = kinds.get(detail) or _list_of(detail)
        out.append((name, kind, n))
    return out


def _list_of(detail: str) -> tuple[str, str]:
    """(name, kind) from a detail "safety list NAME (KIND)" of a list no longer configured."""
    head, _, kind = (detail or "").removeprefix("safety list ").rpartition(" (")
    return head, kind.rstrip(")")


def _annotated(stages: list[StageDir]) -> tuple[StageDir, pa.Schema] | None:
    """The last stage whose data holds the annotated score columns (and uid), with its schema."""
    for stage in reversed(stages):
        files = stage.files()
        if files:
            schema = input_schema(files, stage.storage)
            if {UID, *HISTOGRAM_COLUMNS} <= set(schema.names):
                return stage, schema
    return None


# --- assembling ---------------------------------------------------------------------------------


def collect(run_root: str, cfg: Config, presets: dict[str, Preset] | None = None) -> Report:
    options = cfg.storage.resolved()
    opts = cfg.report
    stages = summaries(run_root, options)
    report = Report(run_root=run_root, stages=stages)
    if not stages:
        report.notes.append("no stage folder with a _stats.json in this run yet")
        return report
    report.funnel_png = funnel_chart(stages)
    dirs = [StageDir(storage.join(run_root, s.name), s.name, options) for s in stages]
    for i, (stage, summary) in enumerate(zip(dirs, stages)):
        report.rejections += rejection_summaries(stage, dirs[i - 1] if i else None, summary.rejected, opts)
    report.safety = safety_counts([d for d, s in zip(dirs, stages) if set(BLOCKLISTED) & set(s.rejected)], cfg)
    for stage in dirs:
        report.histograms += stage_histograms(stage)
        report.entry_frequency += entry_frequency(stage)
    annotated = _annotated(dirs)
    if annotated is None:
        report.notes.append("no stage holds annotated rows yet: score histograms and presets need the annotate stage")
        return report
    stage, schema = annotated
    report.annotated_stage = stage.stage
    report.notes += score_notes(stage.stats() if stage.is_complete() else {})
    engine = DuckDBEngine.for_files(stage.files(), options)
    for column in HISTOGRAM_COLUMNS:
        counted = histogram_counts(engine, column, opts.bins)
        if counted is not None:
            report.histograms.append(Histogram(column, *counted, histogram_chart(column, *counted)))
    presets = presets if presets is not None else load_presets(cfg.select.preset_file)
    report.presets = preset_summaries(engine, presets, schema, opts)
    return report


def stage_histograms(stage: StageDir) -> list[Histogram]:
    """Histograms a stage counted itself (semdedup: each row's nearest-neighbour cosine in its cluster)."""
    hist = stage.stats().get("nn_similarity_histogram") if stage.is_complete() else None
    if not hist or not hist.get("rows"):
        return []
    title = f"{stage.stage}: nearest-neighbour cosine"
    edges, counts = np.array(hist["edges"]), np.array(hist["counts"])
    return [Histogram(title, edges, counts, histogram_chart(title, edges, counts))]


def entry_frequency_bins(rows_per_entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, entries before, entries after) from a balance stage's ``rows_per_entry`` histograms (each a
    list of ``{"min", "max", "entries"}`` bins), on the bins of either."""
    bins = {b["min"]: b["max"] + 1 for key in ("before", "after") for b in rows_per_entry[key]["histogram"]}
    lows = sorted(bins)
    edges = np.array([*lows, bins[lows[-1]]] if lows else [], np.int64)
    counted = [{b["min"]: b["entries"] for b in rows_per_entry[key]["histogram"]} for key in ("before", "after")]
    before, after = (np.array([c.get(low, 0) for low in lows], np.int64) for c in counted)
    return edges, before, after


def entry_frequency(stage: StageDir) -> list[EntryFrequency]:
    """The entry-frequency chart of a finished balance stage (none for another stage or no matched entry)."""
    balance = (stage.stats() if stage.is_complete() else {}).get("balance") or {}
    if "rows_per_entry" not in balance:
        return []
    edges, before, after = entry_frequency_bins(balance["rows_per_entry"])
    if not before.any():
        return []
    fig = entry_frequency_figure(stage.stage, balance["t"], edges, before, after)
    return [EntryFrequency(stage.stage, balance["t"], edges, before, after, _png(fig))]


RANDOM_MARK = "RANDOM-WEIGHT"


def score_notes(stats: dict) -> list[str]:
    """What a reader must know before trusting the score columns: which came from random-weight models
    (the sample's stand-ins) and which are null, and why (from the annotate stage's _stats.json)."""
    columns: dict[str, str] = stats.get("columns", {})
    notes = []
    random_models = (stats.get("config") or {}).get("annotate", {}).get("random_models")
    if random_models:
        from_weights = sorted(c for c, what in columns.items() if " from " in what and not what.startswith("null"))
        notes.append(
            f"{RANDOM_MARK} MODELS: {', '.join(from_weights) or 'the checkpoint columns'} come from tiny random-weight "
            f"checkpoints ({random_models}); their values are meaningless. Give real weights with [annotate] models "
            "(see configs/models.toml)."
        )
    nulls = {c: what for c, what in columns.items() if what.startswith("null")}
    if nulls:
        notes.append("Null columns: " + "; ".join(f"{c} ({what.removeprefix('null: ')})" for c, what in sorted(nulls.items())))
    return notes


def render(report: Report) -> str:
    env = Environment(loader=PackageLoader("jobs.stages", "templates"), autoescape=True, keep_trailing_newline=True)
    return env.get_template("report.html.j2").render(report=report)


def write_report(run_root: str, output: str, cfg: Config, presets: dict[str, Preset] | None = None) -> Report:
    """Collect, render and write the report atomically to ``output`` (local or s3://)."""
    report = collect(run_root, cfg, presets)
    storage.write_bytes_atomic(output, render(report).encode("utf-8"), cfg.storage.resolved())
    log.info("report: %s (%d stages)", output, len(report.stages))
    return report
