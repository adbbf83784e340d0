"""`curation models ...`: write random-weight checkpoints, check a MODELS.toml, fetch the real weights."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from curation.errors import CurationError
from jobs.cli.common import EndpointOpt, console, fail, setup_logging

models_app = typer.Typer(help="Scoring models: write random-weight checkpoints, check a MODELS.toml.", no_args_is_help=True)


@models_app.command("init-random")
def models_init_random(
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for the checkpoints and MODELS.toml.")],
    size: Annotated[str, typer.Option("--size", help="tiny (small widths, for tests and the sample) or real (ViT-B-32, ViT-L-14, efficientnet_b3a).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write RANDOM-weight checkpoints of the real architectures and a MODELS.toml pointing at them."""
    from models.weights.random_init import write_random_models

    setup_logging(False)
    try:
        path = write_random_models(output, size, seed)
    except CurationError as e:
        fail(str(e))
    console.print(f"wrote {path} (random weights: scores are meaningless)")


@models_app.command("check")
def models_check(
    models: Annotated[str, typer.Argument(help="MODELS.toml to check.")],
    load: Annotated[bool, typer.Option("--load", help="Also load every checkpoint on CPU (finds files that do not fit their architecture).")] = False,
    s3_endpoint: EndpointOpt = None,
) -> None:
    """Say what fills each score column and list every problem at once (missing files, hashes, --load: bad checkpoints)."""
    from pathlib import Path

    from curation import storage
    from curation.storage import StorageOptions
    from models.config import load_models_config
    from models.weights.fetch import LEDGER, check_recorded
    from models.registry import check_models

    options = StorageOptions(s3_endpoint_url=s3_endpoint).resolved()
    try:
        cfg = load_models_config(models, options)
    except CurationError as e:
        fail(str(e))
    setup_logging(False)
    statuses = check_models(cfg, options, load=load)
    problems = [s.line() for s in statuses if s.problem]
    for status in statuses:
        console.print(f"{status.column:<26} {status.line()}", markup=False, soft_wrap=True)
    folder = Path(models).parent
    if not storage.is_s3(models) and (folder / LEDGER).exists():
        recorded = check_recorded(folder)
        problems += recorded
        console.print(f"{LEDGER}: " + ("; ".join(recorded) if recorded else "every fetched file has its recorded size and sha256"), markup=False, soft_wrap=True)
    if problems:
        fail(f"{len(set(problems))} problem(s) in {models}; see above")


@models_app.command("fetch")
def models_fetch(
    folder: Annotated[str, typer.Argument(help="Local folder for the checkpoints, FETCHED.json and MODELS.toml.")],
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated models: clip_vitb32,clip_vitl14,aesthetic_laion_v2,watermark (default: all).")] = None,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="NAME=URL: fetch NAME from URL instead (https://, http://, s3://). Repeatable.")] = None,
    mirror: Annotated[Optional[str], typer.Option("--mirror", help="Base URL (or s3://bucket/prefix) replacing scheme://host of every canonical URL; paths are kept.")] = None,
    allow_address: Annotated[Optional[list[str]], typer.Option("--allow-address", help="IP or CIDR the SSRF guard lets through (an internal mirror). Repeatable.")] = None,
    s3_endpoint: EndpointOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Download the real public checkpoints (resumable, size + sha256 verified) and write FOLDER/MODELS.toml."""
    from curation.storage import StorageOptions
    from models.weights.fetch import FetchOptions, fetch_models

    setup_logging(verbose)
    overrides = []
    for item in url or []:
        name, sep, value = item.partition("=")
        if not sep or not value:
            fail(f"--url takes NAME=URL, got {item!r}")
        overrides.append((name.strip(), value.strip()))
    opts = FetchOptions(
        only=tuple(n.strip() for n in (only or "").split(",") if n.strip()), urls=tuple(overrides), mirror=mirror,
        allowed_addresses=tuple(allow_address or ()), storage=StorageOptions(s3_endpoint_url=s3_endpoint).resolved(),
    )  # fmt: skip
    report = lambda f: console.print(f"{f.name:<20} {f.action:<10} {f.size:>13,} bytes  sha256 {f.sha256}  {f.path}", markup=False, soft_wrap=True)  # noqa: E731
    try:
        path = fetch_models(folder, opts, report)
    except CurationError as e:  # FetchModelsError among them
        fail(str(e))
    console.print(f"wrote {path}: curation annotate --models {path}", markup=False, soft_wrap=True)
