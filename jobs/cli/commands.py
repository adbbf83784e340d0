"""The `curation` command line: one command per stage, each a thin call into jobs/<stage>.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from curation.errors import CurationError
from jobs.cli.common import (
    ConfigOpt,
    MasterOpt,
    OverwriteOpt,
    EndpointOpt,
    OutputOpt,
    PhashModeOpt,
    PresetFileOpt,
    VerboseOpt,
    console,
    fail,
    cli_overrides,
    print_stats,
    run_job,
    stage_options,
)
from jobs.cli.models import models_app

app = typer.Typer(
    help="COYO-style image-text curation: Common Crawl -> candidates -> ... -> annotated parquet shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is shown as written: "[download]" is a config table, not rich markup
)


@app.command()
@stage_options
def extract(
    inputs: Annotated[list[str], typer.Argument(help="WAT/WARC files, folders, globs, or paths files (*.paths[.gz]); local or s3://.")],
    output: OutputOpt,
    paths_base: Annotated[Optional[str], typer.Option("--paths-base", help="Base for relative lines of a paths file, e.g. s3://commoncrawl/.")] = None,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", help="Kept candidates per output shard.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Extract (image url, alt text) candidates from Common Crawl WAT/WARC files."""
    from jobs import extract as job

    overrides = cli_overrides(master, s3_endpoint, extract={"paths_base": paths_base, "rows_per_shard": rows_per_shard})
    _, stats = run_job("extract", config, overrides, verbose, lambda spark, cfg: job.run(spark, inputs, output, cfg, overwrite))
    print_stats(stats)


@app.command("filter-text")
@stage_options
def filter_text(
    input: Annotated[str, typer.Option("--input", "-i", help="Candidates stage folder (an extract output; local or s3://).")],
    output: OutputOpt,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", help="Kept rows per output shard.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Apply COYO's caption rules and text-frequency dedup (thresholds: the config's filter_text.rules table)."""
    from jobs import filter_text as job

    overrides = cli_overrides(master, s3_endpoint, filter_text={"rows_per_shard": rows_per_shard})
    _, stats = run_job("filter-text", config, overrides, verbose, lambda spark, cfg: job.run(spark, input, output, cfg, overwrite))
    print_stats(stats)


@app.command()
@stage_options
def download(
    input: Annotated[str, typer.Option("--input", "-i", help="text_ok stage folder (a filter-text output; local or s3://).")],
    output: OutputOpt,
    engine: Annotated[Optional[str], typer.Option("--engine", help="spark (default) or local: a process pool, no Spark.")] = None,
    processes: Annotated[Optional[int], typer.Option("--processes", help="Local engine: worker processes (0 = one per CPU).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Concurrent fetches per task.")] = None,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", help="Input rows per task and output shard.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Fetch every pair's image (SSRF-guarded), apply COYO's image rules, store it resized ([download] in the config)."""
    from jobs import download as job

    overrides = cli_overrides(master, s3_endpoint, download={"engine": engine, "processes": processes, "threads": threads, "rows_per_shard": rows_per_shard})
    _, stats = run_job(
        "download", config, overrides, verbose,
        lambda spark, cfg: job.run(spark, input, output, cfg, overwrite),
        uses_spark=lambda cfg: cfg.download.engine == "spark",
    )
    print_stats(stats)




def _with_dedup_rules(cfg, keys: dict | None = None, links: dict | None = None):
    """The config with [dedup.rules.keys] / [dedup.rules.links] values given on the command line replaced
    (validated again)."""
    import dataclasses

    def given(values):
        return {k: v for k, v in (values or {}).items() if v is not None}

    rules = cfg.dedup.rules
    rules = dataclasses.replace(rules, keys=dataclasses.replace(rules.keys, **given(keys)),
                                links=dataclasses.replace(rules.links, **given(links)))
    return dataclasses.replace(cfg, dedup=dataclasses.replace(cfg.dedup, rules=rules))


@app.command()
@stage_options
def dedup(
    input: Annotated[str, typer.Option("--input", "-i", help="fetched stage folder (a download output) or parquet files; local or s3://.")],
    output: OutputOpt,
    blocklist: Annotated[Optional[list[str]], typer.Option("--blocklist", "-b", help="hash-index output or HASH_LIST parquet of an evaluation set (repeat the option for several); default: the config's dedup.blocklist.")] = None,
    max_distance: Annotated[Optional[int], typer.Option("--max-distance", "-k", help="Hamming k for near duplicates and blocklist matches (0: near-dup off, exact blocklist match).")] = None,
    phash_mode: PhashModeOpt = None,
    key: Annotated[Optional[str], typer.Option("--key", help="dedup key of the duplicate and near-duplicate steps: phash (default) or robust (rotation/flip/EXIF/alpha/crop-invariant).")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Add image_phash to every row; remove evaluation-set matches, (pHash, text), pHash and near duplicates."""
    from jobs.dedup import job

    overrides = cli_overrides(master, s3_endpoint)
    _, stats = run_job(
        "dedup", config, overrides, verbose,
        lambda spark, cfg: job.run(
            spark, input, output, _with_dedup_rules(cfg, keys={"phash_mode": phash_mode, "key": key}, links={"max_distance": max_distance}),
            overwrite=overwrite, blocklist=blocklist,
        ),
    )
    print_stats(stats)


@app.command("hash-index")
@stage_options
def hash_index(
    sources: Annotated[list[str], typer.Argument(help="Image folders, tar shards or parquet files with image bytes; NAME=PATH names the set (default: the path's last part).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder of the hash list (local or s3://).")],
    phash_mode: PhashModeOpt = None,
    images_per_shard: Annotated[Optional[int], typer.Option("--images-per-shard", help="Image files of a folder per task.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Hash an evaluation set's images (ImageNet, COCO, Flickr30k, CC3M, ...) into a blocklist for `dedup --blocklist`."""
    from jobs import hash_index as job

    overrides = cli_overrides(master, s3_endpoint, dedup={"images_per_shard": images_per_shard})
    _, stats = run_job(
        "hash-index", config, overrides, verbose,
        lambda spark, cfg: job.run(spark, sources, output, _with_dedup_rules(cfg, keys={"phash_mode": phash_mode}), overwrite),
    )
    print_stats(stats)


@app.command()
@stage_options
def annotate(
    input: Annotated[list[str], typer.Option("--input", "-i", help="unique stage folder (a dedup output) or parquet files; local or s3://.")],
    output: OutputOpt,
    models: Annotated[Optional[str], typer.Option("--models", "-m", help="MODELS.toml naming the weights (see configs/models.toml); unset: offline defaults only.")] = None,
    random_models: Annotated[Optional[str], typer.Option("--random-models", help="Folder: write tiny RANDOM-weight models there if absent and use them (tests, demos).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (default), cpu or cuda.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per model batch (default 64).")] = None,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", help="Input rows per task and output shard.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Add COYO's score columns: CLIP B/32 + L/14 similarity, aesthetic, watermark, NSFW, faces, token counts."""
    from jobs import annotate as job

    overrides = cli_overrides(master, s3_endpoint, annotate={"models": models, "random_models": random_models, "device": device, "batch_size": batch_size, "rows_per_shard": rows_per_shard})
    _, stats = run_job("annotate", config, overrides, verbose, lambda spark, cfg: job.run(spark, input, output, cfg, overwrite))
    print_stats(stats)  # what fills each column was logged as the stage started


@app.command()
@stage_options
def semdedup(
    input: Annotated[list[str], typer.Option("--input", "-i", help="annotate stage folder (written with [annotate] embeddings); local or s3://.")],
    output: OutputOpt,
    eps: Annotated[Optional[float], typer.Option("--eps", help="Similarity > 1 - eps is a duplicate (default 0.05).")] = None,
    clusters: Annotated[Optional[int], typer.Option("--clusters", help="k-means clusters (default 1000).")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """SemDeDup: k-means on the CLIP image embeddings, then drop rows within 1 - eps of a kept row in their cluster."""
    from jobs import semdedup as job

    overrides = cli_overrides(master, s3_endpoint, semdedup={"eps": eps, "clusters": clusters})
    _, stats = run_job("semdedup", config, overrides, verbose, lambda spark, cfg: job.run(spark, input, output, cfg, overwrite))
    print_stats(stats)


@app.command()
@stage_options
def balance(
    input: Annotated[list[str], typer.Option("--input", "-i", help="a filter-text, dedup, annotate or semdedup stage folder; local or s3://.")],
    output: OutputOpt,
    metadata: Annotated[Optional[str], typer.Option("--metadata", help="The entry list: MetaCLIP's metadata.json (a JSON list of strings) or one entry per line; local or s3://.")] = None,
    t: Annotated[Optional[int], typer.Option("--t", help="Rows each entry keeps on average: an entry matched n times keeps each of its rows with probability min(1, t / n) (default 20000).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the per-(row, entry) draw (default 0).")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """MetaCLIP metadata balancing: keep each entry's rows at about t, drop captions that match no entry."""
    from jobs import balance as job

    overrides = cli_overrides(master, s3_endpoint, balance={"metadata": metadata, "t": t, "seed": seed})
    _, stats = run_job("balance", config, overrides, verbose, lambda spark, cfg: job.run(spark, input, output, cfg, overwrite))
    print_stats(stats)


app.add_typer(models_app, name="models")






@app.command()
@stage_options
def select(
    input: Annotated[str, typer.Option("--input", "-i", help="Annotated shards: a stage folder, a folder, parquet files or a glob (local or s3://).")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset name (`curation presets list`).")],
    output: Annotated[str, typer.Option("--output", "-o", help="Output folder: uids/ (sorted uid list) and _stats.json.")],
    preset_file: PresetFileOpt = None,
    engine: Annotated[Optional[str], typer.Option("--engine", help="duckdb (default, embedded) or spark (Spark SQL).")] = None,
    materialize: Annotated[bool, typer.Option("--materialize", help="Also write the selected rows with their images as even parquet shards in data/.")] = False,
    rows_per_shard: Annotated[Optional[int], typer.Option("--rows-per-shard", help="--materialize: rows per shard.")] = None,
    webdataset: Annotated[Optional[bool], typer.Option("--webdataset/--no-webdataset", help="--materialize: also write webdataset tars in wds/.")] = None,
    *, config, master, s3_endpoint, overwrite, verbose,
) -> None:
    """Select the rows a preset keeps: a sorted uid list and counts (and shards with --materialize)."""
    from jobs import select as job

    overrides = cli_overrides(master, s3_endpoint, select={"engine": engine, "preset_file": preset_file, "rows_per_shard": rows_per_shard, "webdataset": webdataset})
    _, stats = run_job(
        "select", config, overrides, verbose,
        lambda spark, cfg: job.run(spark, cfg, input, preset, output, materialize, overwrite),
        uses_spark=lambda cfg: cfg.select.engine == "spark",
    )
    console.print(f"preset {stats['preset']}: {stats['rows_out']:,} of {stats['rows_in']:,} rows -> {output}/uids")
    for condition, n in stats["passing"].items():
        console.print(f"  {condition}: {n:,}")
    if "materialized" in stats:
        console.print(f"  {stats['materialized']['shards']} shards of up to {stats['materialized']['rows_per_shard']:,} rows")


presets_app = typer.Typer(help="Selection presets: list them, show one, count what they keep.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")
InputOpt = Annotated[Optional[str], typer.Option("--input", "-i", help="Annotated shards to count on (local or s3://).")]


def _run_without_spark(config: str | None, preset_file: str | None, s3_endpoint: str | None, verbose: bool, job: Callable):
    """``job(cfg)`` with the config and error handling of _run_job, but no Spark session (presets, report)."""
    overrides = {"storage": {"s3_endpoint_url": s3_endpoint}, "select": {"preset_file": preset_file}}
    return run_job("presets", config, overrides, verbose, lambda _, cfg: job(cfg), uses_spark=lambda cfg: False)[1]


@presets_app.command("list")
def presets_list(
    input: InputOpt = None,
    preset_file: PresetFileOpt = None,
    config: ConfigOpt = None,
    s3_endpoint: EndpointOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Every preset with its conditions and, with --input, how many rows of it each keeps."""
    from jobs.stages.select import overview

    rows = _run_without_spark(config, preset_file, s3_endpoint, verbose, lambda cfg: overview(cfg, input))
    table = RichTable(title="presets" + (f" on {input}" if input else ""))
    columns = ("preset", "keeps", "conditions", "description") if input else ("preset", "conditions", "description")
    for column in columns:
        table.add_column(column, justify="right" if column == "keeps" else "left")
    for row in rows:
        cells = {"preset": row["name"], "keeps": row.get("keeps", ""), "conditions": "\n".join(row["conditions"])}
        table.add_row(*(escape(cells.get(c, row.get(c, ""))) for c in columns))
    Console().print(table)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name.")],
    input: InputOpt = None,
    preset_file: PresetFileOpt = None,
    config: ConfigOpt = None,
    s3_endpoint: EndpointOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """One preset: its definition, its SQL and, with --input, what each condition keeps."""
    from jobs.stages.select import show

    typer.echo(json.dumps(_run_without_spark(config, preset_file, s3_endpoint, verbose, lambda cfg: show(cfg, name, input)), indent=2))


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="A run root (RUN_ROOT with one folder per stage).")],
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="HTML file to write (default RUN_DIR/report.html).")] = None,
    preset_file: PresetFileOpt = None,
    config: ConfigOpt = None,
    s3_endpoint: EndpointOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write a self-contained HTML report of a run: funnel, score histograms, presets, sample thumbnails."""
    from jobs.stages.report import REPORT_NAME, write_report
    from curation.storage import join

    target = output or join(run_dir, REPORT_NAME)
    _run_without_spark(config, preset_file, s3_endpoint, verbose, lambda cfg: write_report(run_dir, target, cfg))
    console.print(f"report: {target}")


@app.command()
def pipeline(
    config: Annotated[str, typer.Option("--config", "-c", help="TOML run config ([pipeline] run_root, inputs or sample).")],
    master: MasterOpt = None,
    s3_endpoint: EndpointOpt = None,
    overwrite: OverwriteOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run every stage in order into RUN_ROOT/<stage>/ and write RUN_ROOT/_manifest.json."""
    from jobs import pipeline as job

    overrides = cli_overrides(master, s3_endpoint)
    cfg, manifest = run_job("pipeline", config, overrides, verbose, lambda spark, cfg: job.run(spark, cfg, overwrite))
    for name, stats in manifest["stages"].items():
        print_stats({"stage": name, **stats})
    from jobs.stages.report import REPORT_NAME
    from curation.storage import join

    root = manifest["run_root"]
    if "annotate" in manifest["stages"]:
        console.print(f"annotated shards: {join(root, 'annotate', 'data')}", markup=False)
    console.print(f"report:           {join(root, REPORT_NAME)}", markup=False)
    console.print(f"run manifest:     {join(root, '_manifest.json')}", markup=False)


@app.command()
def sample(
    output: Annotated[str, typer.Argument(help="Folder to write the embedded crawl sample into.")],
    pages: Annotated[int, typer.Option(help="Number of crawl pages.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    s3_endpoint: EndpointOpt = None,
) -> None:
    """Write the embedded Common Crawl sample (WAT + WARC files) to OUTPUT (a folder or s3://bucket/prefix)."""
    from curation.sample.crawl_files import write_sample
    from curation.storage import StorageOptions

    manifest = write_sample(output, seed=seed, pages=pages, options=StorageOptions(s3_endpoint_url=s3_endpoint).resolved())
    console.print(f"wrote {len(manifest['files'])} crawl files, {manifest['pages']} pages, to {output}")


@app.command()
def stats(run_dir: Annotated[str, typer.Argument(help="A stage output folder, or a run root (every stage's stats).")], s3_endpoint: EndpointOpt = None) -> None:
    """Print a stage's _stats.json (or, for a run root, each stage's)."""
    from curation import storage
    from curation.stage import StageDir
    from curation.storage import StorageOptions

    from jobs.stages.report import find_stages
    from curation.stage import STATS

    options = StorageOptions(s3_endpoint_url=s3_endpoint).resolved()
    stage = StageDir(run_dir, "?", options)
    try:
        if stage.is_complete():
            typer.echo(json.dumps(stage.stats(), indent=2))
        elif storage.exists(stage.path(STATS), options) or storage.is_dir(stage.path("_shards"), options):
            fail(f"{run_dir} has no _SUCCESS: the stage did not finish (rerun it to resume)")
        else:  # a run root: every stage's stats
            typer.echo(json.dumps(find_stages(run_dir, options), indent=2))
    except CurationError as e:
        fail(str(e))


def main() -> None:
    app(prog_name="curation")


def submit_main(command: str) -> None:
    """Entry of jobs/<stage>.py under spark-submit: the same arguments as `curation <command>`."""
    app([command, *sys.argv[1:]], prog_name=f"spark-submit.sh {command}")


if __name__ == "__main__":
    sys.exit(main())
