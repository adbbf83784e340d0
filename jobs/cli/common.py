"""What every `curation` command shares: its options (Annotated aliases), logging, the one-line error
exit, and running a job with the config (CLI flags override it) and a Spark session."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table as RichTable

from curation.errors import CurationError
from jobs.stages.config import load_config

console = Console(stderr=True)

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="TOML run config (defaults: COYO-700M's values).")]
MasterOpt = Annotated[Optional[str], typer.Option("--master", help="Spark master, e.g. local[2] or yarn (default: config, local[*]).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Delete what is in OUTPUT and start again (default: resume).")]
EndpointOpt = Annotated[Optional[str], typer.Option("--s3-endpoint", help="S3 endpoint URL (MinIO, moto, ...); default $AWS_ENDPOINT_URL.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Stage output folder (local or s3://).")]
PhashModeOpt = Annotated[Optional[str], typer.Option("--phash-mode", help="exact (= imagehash.phash, default) or fast (JPEG draft decoding).")]
PresetFileOpt = Annotated[Optional[str], typer.Option("--preset-file", help="TOML file of custom presets (added to the built-in ones).")]


OWN_LOGGERS = ("curation", "jobs", "filters", "models", "schemas")


def setup_logging(verbose: bool) -> None:
    """The project's INFO progress lines; third-party INFO (open_clip's model configs, matplotlib's font
    cache, ...) only with --verbose, which shows everything at DEBUG."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("py4j", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_stats(stats: dict) -> None:
    table = RichTable(title=f"stage {stats['stage']}")
    table.add_column("count")
    table.add_column("rows", justify="right")
    table.add_row("rows in", f"{stats['rows_in']:,}")
    table.add_row("rows out", f"{stats['rows_out']:,}")
    for reason, n in stats["rejected"].items():
        table.add_row(f"rejected: {reason}", f"{n:,}")
    console.print(table)
    for err in stats.get("file_errors", [])[:20]:
        console.print(f"[yellow]file problem[/yellow] {err['file']}: {err['error'][:200]}")


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)  # one line; [section] names are not markup
    raise typer.Exit(2)


def run_job(name: str, config: str | None, overrides: dict, verbose: bool, job: Callable, uses_spark: Callable = lambda cfg: True):
    """Load the config (CLI flags override it), build the Spark session, run ``job(spark, cfg)``.
    A CurationError (bad config, inputs, paths, environment) ends with its one-line message and exit
    code 2; any other exception is a bug and keeps its traceback.
    ``uses_spark(cfg)`` False: no session is built and the job gets None (a local engine)."""
    setup_logging(verbose)
    try:
        cfg = load_config(config, overrides)
        from jobs.session import build_spark_session

        spark = build_spark_session(cfg.spark.master, f"curation-{name}", cfg.spark.conf) if uses_spark(cfg) else None
        return cfg, job(spark, cfg)
    except CurationError as e:
        fail(str(e))


def cli_overrides(master: str | None, s3_endpoint: str | None, **sections: dict) -> dict:
    """Config overrides from the command line: the Spark master, the S3 endpoint, and per-section keys
    (None values leave the config's)."""
    return {"spark": {"master": master}, "storage": {"s3_endpoint_url": s3_endpoint}, **sections}


# The options every stage command takes, after its own: name -> (typer option, default).
STAGE_OPTIONS = {
    "config": (ConfigOpt, None),
    "master": (MasterOpt, None),
    "s3_endpoint": (EndpointOpt, None),
    "overwrite": (OverwriteOpt, False),
    "verbose": (VerboseOpt, False),
}


def stage_options(command: Callable) -> Callable:
    """Give a stage command the options of STAGE_OPTIONS, defined once: the command lists them as bare
    keyword-only parameters (``*, config, master, s3_endpoint, overwrite, verbose``) and this fills in
    their typer options and defaults (typer reads the signature)."""
    signature = inspect.signature(command, eval_str=True)
    params = [
        p.replace(annotation=STAGE_OPTIONS[p.name][0], default=STAGE_OPTIONS[p.name][1]) if p.name in STAGE_OPTIONS else p
        for p in signature.parameters.values()
    ]
    command.__signature__ = signature.replace(parameters=params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
