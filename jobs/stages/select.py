"""`select`: a preset over annotated parquet shards -> a sorted uid list, counts, and optionally shards.

The query runs in an :class:`Engine`: DuckDB over the parquet files (embedded default, here) or Spark
SQL (``jobs/select.py``). Both run the same SQL, built by ``filters.presets.render``. Output folder:

    OUT/uids/part-*.parquet   the selected uids, sorted (parts in name order are in uid order)
    OUT/data/part-*.parquet   --materialize: the selected rows with their images, rows_per_shard each
    OUT/wds/part-*.tar        --materialize --webdataset: the same shards as webdataset tars (keys free of dots)
    OUT/wds/sizes.json        --materialize --webdataset: samples per tar (open_clip's layout)
    OUT/README.md             --materialize: the dataset card (jobs/stages/card.py)
    OUT/_stats.json           preset, engine, rows_in, rows_out, rows passing each condition, thresholds
    OUT/_SUCCESS              written last

Selection and materialisation are separate steps (DataComp's apply_filter, then a resharder): the shards
are written from the uid list, so the engine that selected does not matter.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation import lifecycle, storage
from curation.errors import CurationError
from curation.lifecycle import StageSpec
from curation.stage import DATA, STATS, SUCCESS, StageDir, read_parquet
from curation.storage import StorageOptions
from jobs.stages.config import Config
from jobs.stages.preset_query import VIEW, DuckDBEngine, Engine, Selection, count, input_schema, keep_counts, register_parquet
from curation.output.shards import even_shards, part_name, write_parquet, write_sizes, write_webdataset
from jobs.stages.card import CARD, write_card
from filters.presets import Preset, SqlFilter, get_preset, load_presets
from schemas import UID

log = logging.getLogger(__name__)

STAGE = "select"
UIDS = "uids"
WEBDATASET = "wds"
OUTPUT_NAMES = (UIDS, DATA, WEBDATASET, CARD, STATS, SUCCESS)


class SelectError(CurationError, ValueError):
    """A selection that cannot run as asked: no input files, no uid column, an output holding another one."""


# --- input ------------------------------------------------------------------------------------


SPEC = StageSpec(STAGE, upstream=("annotate", "semdedup"), input_columns=(UID,), finished_input=False)


def input_files(uri: str, options: StorageOptions | None = None) -> list[str]:
    """The parquet files of an input (a finished annotate folder's data/, a folder, a file or a glob): the
    lifecycle's one input listing, with select's spec."""
    return lifecycle.input_files(SPEC, [uri], options or StorageOptions())


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
    sizes: dict[str, int] = {}
    for index, table in enumerate(even_shards(engine.reader(sql), plan.rows_per_shard)):
        table = table.cast(schema)
        write_parquet(storage.join(out, DATA, part_name(index)), table.to_batches(), schema, options)
        if plan.webdataset:
            tar = part_name(index, "tar")
            sizes[tar] = write_webdataset(storage.join(out, WEBDATASET, tar), table, options)
        shards, rows = shards + 1, rows + table.num_rows
    if plan.webdataset:
        write_sizes(storage.join(out, WEBDATASET), sizes, options)
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
        write_card(out, stats, schema, options)
    stats["elapsed_seconds"] = round(time.time() - started, 3)
    text = json.dumps(stats, indent=2, sort_keys=True)
    storage.write_bytes_atomic(storage.join(out, STATS), text.encode(), options)
    storage.write_bytes_atomic(storage.join(out, SUCCESS), b"", options)
    log.info("select: preset %s kept %d of %d rows (%s)", preset.name, selection.rows_out, selection.rows_in, engine.name)
    return json.loads(text)


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
