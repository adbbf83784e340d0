"""The dataset card of a materialised selection: ``OUT/README.md`` in Hugging Face's dataset-card layout.

YAML front matter first (what the Hub reads: ``pretty_name``, ``license``, ``task_categories``,
``size_categories``, ``tags``, ``configs`` with the data files of each format, ``dataset_info`` with the
features and the split's row count, and a ``curation`` block: preset, rows, config digest, whether any score
came from random weights), then Markdown: how to read the files, every column with its meaning and the model
and weights behind it, the preset and its SQL, the upstream funnel, the safety lists applied, the models'
licences and the run's provenance.

Everything on the card comes from what the run wrote: the selection's stats, the annotate stage's
``_stats.json`` (which scorer filled each column, the run config), the other stage folders under the run
root (the funnel) and the download stage's rejected rows (matches per safety list).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from curation import storage
from curation.errors import InputError
from curation.stage import DATA, REJECTED_DIR, STATS, StageDir, read_parquet
from curation.storage import StorageOptions
from models.registry import REGISTRY
from schemas import ANNOTATED, DETAIL, REASON, Reason

if TYPE_CHECKING:  # the report module (and its charting) is imported only when a card reads a funnel
    from jobs.stages.report import StageSummary

log = logging.getLogger(__name__)

CARD = "README.md"
RANDOM_MARK = "RANDOM-WEIGHT"  # write_random_models heads its MODELS.toml with it
# scorers whose model ships inside a package (their licence is the package's)
SHIPPED_BY = {"faces": "opencv-python-headless", "tokens": "blingfire", "nsfw_nudenet": "nudenet"}
_HF_TYPES = {
    pa.string(): "string", pa.large_string(): "string", pa.binary(): "binary", pa.large_binary(): "binary",
    pa.int32(): "int32", pa.int64(): "int64", pa.float32(): "float32", pa.float64(): "float64", pa.bool_(): "bool",
}
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


@dataclass(frozen=True)
class SafetyRow:
    name: str
    kind: str
    rows_removed: int


@dataclass(frozen=True)
class RunRecord:
    """What the run's own files say about the selection's input."""

    annotate: dict | None = None  # the annotate stage's _stats.json (None: the input is not a stage folder)
    funnel: list[StageSummary] = field(default_factory=list)
    safety: list[SafetyRow] = field(default_factory=list)
    random_models: str | None = None  # where random-weight models came from, when any score did


# --- reading the run ----------------------------------------------------------------------------


def _stats_of(folder: str, options: StorageOptions | None) -> dict | None:
    uri = storage.join(folder, STATS)
    return json.loads(storage.read_bytes(uri, options)) if storage.exists(uri, options) else None


def input_stage_folder(input_uri: str, options: StorageOptions | None = None) -> tuple[str, dict] | None:
    """The stage folder a selection's input is (or lies in: its data/, a file of it) with its stats, else None."""
    uri = storage.absolute(input_uri).rstrip("/")
    for _ in range(3):
        if "*" not in uri and "?" not in uri:
            stats = _stats_of(uri, options)
            if stats is not None and "stage" in stats and "rejected" in stats:
                return uri, stats
        parent = posixpath.dirname(uri)
        if parent in (uri, "") or parent.endswith(":/"):
            break
        uri = parent
    return None


def config_digest(config: dict) -> str:
    """sha256 of the run config as canonical JSON (sorted keys): equal digests, equal settings."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def read_funnel(run_root: str, options: StorageOptions | None) -> list[StageSummary]:
    """Every stage folder of the run root, in the run manifest's order (the report's reading of a run)."""
    from jobs.stages.report import summaries  # the report's charts are not needed here

    try:
        return summaries(run_root, options)
    except InputError as e:
        log.warning("dataset card: no upstream funnel (%s)", e)
        return []


def safety_rows(download: str, stats: dict, options: StorageOptions | None) -> list[SafetyRow]:
    """Each safety list the download stage applied, with the rows it removed (counted from rejected/)."""
    lists = (stats.get("config") or {}).get("safety", {}).get("lists", [])
    if not lists:
        return []
    from filters.safety import SafetyList  # a config that names lists comes from a build that has them

    entries = [SafetyList(**e) for e in lists]
    removed: dict[str, int] = {}
    blocked = pa.array([Reason.BLOCKLISTED_URL.value, Reason.BLOCKLISTED_IMAGE.value])
    for f in StageDir(download, "download", options or StorageOptions()).files(REJECTED_DIR):
        table = read_parquet(f, options).select([REASON, DETAIL])
        details = table.filter(pc.is_in(table[REASON], value_set=blocked))[DETAIL].to_pylist()
        for d in details:
            removed[d] = removed.get(d, 0) + 1
    return [SafetyRow(e.name, e.kind, removed.get(e.detail, 0)) for e in entries]


def random_weights_source(annotate: dict, options: StorageOptions | None) -> str | None:
    """Where the annotate stage's random-weight models came from, or None when it used trained weights:
    ``[annotate] random_models``, or a MODELS.toml that write_random_models marked."""
    opts = (annotate.get("config") or {}).get("annotate", {})
    if opts.get("random_models"):
        return opts["random_models"]
    models = opts.get("models")
    if models and storage.exists(models, options) and RANDOM_MARK in storage.read_bytes(models, options)[:4096].decode("utf-8", "replace"):
        return models
    return None


def read_run(input_uri: str, options: StorageOptions | None = None) -> RunRecord:
    """The record of the run whose stage folder (annotate, or semdedup beside it) the selection read."""
    found = input_stage_folder(input_uri, options)
    if found is None:
        return RunRecord()
    folder, stats = found
    run_root = posixpath.dirname(folder)
    annotate = stats if stats["stage"] == "annotate" else _stats_of(storage.join(run_root, "annotate"), options)
    if annotate is None:
        return RunRecord(funnel=read_funnel(run_root, options))
    download = storage.join(run_root, "download")
    download_stats = _stats_of(download, options)
    return RunRecord(
        annotate=annotate,
        funnel=read_funnel(run_root, options),
        safety=safety_rows(download, download_stats, options) if download_stats else [],
        random_models=random_weights_source(annotate, options),
    )


# --- the card -----------------------------------------------------------------------------------


def _yaml(value: object, indent: int = 0) -> list[str]:
    """Block YAML of dicts, lists and scalars; strings as JSON strings (valid YAML double-quoted scalars)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines += [f"{pad}{key}:", *_yaml(item, indent + 2)]
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:  # a list
            if isinstance(item, (dict, list)) and item:
                first, *rest = _yaml(item, indent + 2)
                lines += [f"{pad}- {first.lstrip()}", *rest]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _scalar(value: object) -> str:
    if isinstance(value, (dict, list)):  # empty ones: _yaml writes the others as blocks
        return "{}" if isinstance(value, dict) else "[]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(_cell(v) for v in r) + " |" for r in rows)]


def hf_feature(f: pa.Field) -> dict:
    if pa.types.is_list(f.type) and f.type.value_type in _HF_TYPES:
        return {"name": f.name, "sequence": _HF_TYPES[f.type.value_type]}
    return {"name": f.name, "dtype": _HF_TYPES.get(f.type, str(f.type))}


def size_category(rows: int) -> str:
    return next((label for limit, label in _SIZE_CATEGORIES if rows < limit), "n>1B")


def brace_pattern(shards: int, ext: str) -> str:
    """The shards as one brace pattern (what open_clip's --train-data and webdataset expand)."""
    if shards <= 1:
        return f"part-00000.{ext}"
    return f"part-{{00000..{shards - 1:05d}}}.{ext}"


def _filled_by(column: str, run: RunRecord) -> str:
    if run.annotate is None:
        return "not recorded (no annotate stage stats beside the input)"
    return (run.annotate.get("columns") or {}).get(column, "")


def _licence_of_package(package: str) -> str:
    meta = importlib.metadata.metadata(package)
    licence = meta.get("License-Expression") or meta.get("License")
    if not licence or licence == "UNKNOWN":
        classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        licence = ", ".join(classifiers) or "not stated"
    return f"{licence} (shipped with {package} {meta['Version']})"


def model_licences(run: RunRecord) -> list[tuple[str, str, str]]:
    """(section, what filled its columns, licence) of every scorer that filled a column."""
    columns = (run.annotate or {}).get("columns") or {}
    rows = []
    for section, entry in REGISTRY.entries.items():
        filled = [columns[c] for c in REGISTRY.columns[section] if c in columns and not columns[c].startswith("null")]
        if not filled:
            continue
        # a section with both (faces: the shipped Haar cascade, or fetched YuNet) used the checkpoint
        # when what filled the column names its file
        shipped = section in SHIPPED_BY and (entry.checkpoint is None or entry.checkpoint.filename not in filled[0])
        if shipped:
            licence = _licence_of_package(SHIPPED_BY[section])
        elif run.random_models and entry.checkpoint is not None:
            licence = "random weights: no trained checkpoint (scores meaningless)"
        elif entry.checkpoint is not None:
            licence = f"{entry.checkpoint.licence}, the licence of the public checkpoint {entry.checkpoint.filename}"
        else:
            licence = "not recorded: the licence of the weights this run configured"
        rows.append((section, filled[0], licence))
    return rows


def front_matter(stats: dict, schema: pa.Schema, run: RunRecord) -> dict:
    materialized = stats["materialized"]
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA}/part-*.parquet"}]}]
    if materialized.get("webdataset"):
        configs.append({"config_name": "webdataset", "data_files": [{"split": "train", "path": "wds/part-*.tar"}]})
    annotate = run.annotate or {}
    return {
        "pretty_name": f"{stats['preset']} selection",
        "license": "other",
        "task_categories": ["text-to-image", "image-to-text"],
        "size_categories": [size_category(materialized["rows"])],
        "tags": ["image-text-pairs", "coyo-700m-columns", f"preset-{stats['preset']}"],
        "configs": configs,
        "dataset_info": {
            "features": [hf_feature(f) for f in schema],
            "splits": [{"name": "train", "num_examples": materialized["rows"]}],
        },
        "curation": {
            "preset": stats["preset"],
            "rows": materialized["rows"],
            "rows_in": stats["rows_in"],
            "config_digest": config_digest(annotate["config"]) if annotate.get("config") else None,
            "random_weights": run.random_models is not None,
        },
    }


def render_card(stats: dict, schema: pa.Schema, run: RunRecord) -> str:
    """The card's text from the selection's stats, the materialised schema and the run's record."""
    m = stats["materialized"]
    lines = ["---", *_yaml(front_matter(stats, schema, run)), "---", "", f"# {stats['preset']} selection", ""]
    if run.random_models:
        columns = (run.annotate or {}).get("columns") or {}
        random_cols = sorted(c for c, what in columns.items() if " from " in what and not what.startswith("null"))
        lines += [
            f"> **{RANDOM_MARK} MODELS.** {', '.join(random_cols) or 'The checkpoint columns'} came from tiny random-weight "
            f"checkpoints ({run.random_models}): their values are meaningless, and so is any selection on them.", "",
        ]
    lines += [
        f"{m['rows']:,} rows of {stats['rows_in']:,} annotated rows, kept by preset `{stats['preset']}`"
        + (f" ({stats['description']})" if stats.get("description") else "") + f", in {m['shards']} shards of up to "
        f"{m['rows_per_shard']:,} rows, sorted by uid.", "",
        "## Files", "",
        *_table(("path", "format"), [(f"{DATA}/{brace_pattern(m['shards'], 'parquet')}", "parquet (zstd), one row per sample with its image bytes"),
                                     *([(f"wds/{brace_pattern(m['shards'], 'tar')}", "webdataset: KEY.jpg (or png, gif, webp), KEY.txt (caption), KEY.json (other columns)"),
                                        ("wds/sizes.json", "samples per tar (open_clip's layout)")] if m.get("webdataset") else []),
                                     ("uids/part-*.parquet", "the selected uids, sorted")]),
        "", "Reading it:", "", "```python",
        "from datasets import load_dataset",
        f'rows = load_dataset("parquet", data_files="{DATA}/*.parquet", split="train")',
    ]
    if m.get("webdataset"):
        lines += [
            "", "import webdataset as wds",
            f'samples = wds.WebDataset("wds/{brace_pattern(m["shards"], "tar")}").decode("pil").to_tuple("jpg;png;webp", "txt")',
            "```", "", f"open_clip: `--train-data 'wds/{brace_pattern(m['shards'], 'tar')}'` (the sample count comes from sizes.json).",
        ]
    else:
        lines.append("```")
    lines += ["", "## Columns", ""]
    described = set(ANNOTATED.names)
    lines += _table(("column", "type", "meaning", "model and weights"), [
        (f.name, hf_feature(f).get("dtype") or f"list of {hf_feature(f)['sequence']}",
         ANNOTATED.column(f.name).doc if f.name in described else "",
         _filled_by(f.name, run) if f.name in REGISTRY.score_columns else "")
        for f in schema
    ])
    lines += _selection(stats) + _funnel(run) + _safety(run)
    lines += ["", "## Model licences", ""]
    licences = model_licences(run)
    lines += _table(("model", "what filled its columns", "licence"), licences) if licences else ["Not recorded (no annotate stage stats)."]
    lines += [
        "", "The images and captions are web content: their rights stay with their owners.",
        "", "## Provenance", "",
        f"- input: `{stats['input']}`",
    ]
    annotate = run.annotate or {}
    if annotate.get("config"):
        lines.append(f"- run config digest (sha256 of the annotate stage's recorded config, canonical JSON): `{config_digest(annotate['config'])}`")
    if annotate.get("input_fingerprint"):
        lines.append(f"- annotate input fingerprint: `{annotate['input_fingerprint']}`")
    return "\n".join(lines) + "\n"


def _selection(stats: dict) -> list[str]:
    lines = ["", "## Selection", "", f"Preset `{stats['preset']}` ({stats.get('preset_source', 'built-in')}):", ""]
    passing = stats.get("passing") or {}
    lines += [f"- `{c}`" + (f": {passing[c]:,} of {stats['rows_in']:,} rows pass it alone" if c in passing else "") for c in stats["definition"]]
    lines += ["", f"SQL ({stats.get('engine', 'duckdb')}), over the annotated rows:", "", "```sql",
              f"SELECT * FROM annotated WHERE {stats['where']} ORDER BY uid", "```"]
    params = stats.get("params") or {}
    if params:
        lines += ["", "with " + ", ".join(f"`${k}` = {v!r}" for k, v in params.items()) + "."]
    thresholds = stats.get("thresholds") or {}
    if thresholds:
        lines += ["", "Keep-fractions resolved on this input: " + ", ".join(f"`{k}` at {v!r}" for k, v in thresholds.items()) + "."]
    return lines


def _funnel(run: RunRecord) -> list[str]:
    lines = ["", "## Upstream funnel", ""]
    if not run.funnel:
        return lines + ["Not recorded: the input is not a stage folder of a run root."]
    return lines + _table(("stage", "rows in", "rows out", "rejected", "by reason"), [
        (s.name, f"{s.rows_in:,}", f"{s.rows_out:,}", f"{sum(s.rejected.values()):,}",
         ", ".join(f"{r} {n:,}" for r, n in sorted(s.rejected.items())) or "-")
        for s in run.funnel
    ])


def _safety(run: RunRecord) -> list[str]:
    if not run.safety:
        return []
    return ["", "## Safety lists", "", "Applied by the download stage before any request (URL lists) or as the body arrived (image lists):", "",
            *_table(("list", "kind", "rows removed"), [(s.name, s.kind, f"{s.rows_removed:,}") for s in run.safety])]


def write_card(out: str, stats: dict, schema: pa.Schema, options: StorageOptions | None = None) -> str:
    """Write ``out/README.md`` for a materialised selection; return its URI."""
    uri = storage.join(out, CARD)
    storage.write_bytes_atomic(uri, render_card(stats, schema, read_run(stats["input"], options)).encode("utf-8"), options)
    return uri
