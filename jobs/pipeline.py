"""`curation pipeline`: every stage in order, each into RUN_ROOT/<stage>/, with a run manifest.

Every job has the same ``run(spark, inputs, output, config, overwrite, redo_stale)`` shape and its ``SPEC``
names the stage it reads, so the pipeline is a loop. A stage whose input changed since it was built is
redone (``[pipeline] redo_stale``); every stage must consume exactly what the one before it kept.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import platform
import tempfile
import time

from pyspark.sql import SparkSession

from curation import __version__, storage
from jobs.stages.config import Config, ConfigError
from curation.errors import StaleStageError
from curation.stage import StageDir

log = logging.getLogger(__name__)

# the stages in order: folder name -> job module
STAGES = {
    "extract": "jobs.extract",
    "filter-text": "jobs.filter_text",
    "download": "jobs.download",
    "dedup": "jobs.dedup.job",
    "annotate": "jobs.annotate",
    "semdedup": "jobs.semdedup",
    "balance": "jobs.balance",  # runs where [balance] after places it (see run_order)
}
# run only when [pipeline] stages names them; the default (empty) list is every other stage
OPTIONAL_STAGES = ("semdedup", "balance")
DEFAULT_STAGES = tuple(s for s in STAGES if s not in OPTIONAL_STAGES)


def folder_of(stage_name: str) -> str:
    """The run-root folder of a stage (the SPEC name with dashes)."""
    return stage_name.replace("_", "-")


def run_order(wanted: list[str], after: str) -> list[tuple[str, str | None]]:
    """(stage, the folder it reads; None: the run's inputs) in run order. balance reads ``after``'s folder
    (annotate: the last one, semdedup's when it runs); the stage that would read that folder reads balance's."""
    anchor = "semdedup" if after == "annotate" and "semdedup" in wanted else after
    order, plan = [s for s in STAGES if s != "balance"], []
    order.insert(order.index(anchor) + 1, "balance")
    for name in (s for s in order if s in wanted):
        upstream = anchor if name == "balance" else importlib.import_module(STAGES[name]).SPEC.upstream
        reads = None if upstream is None else folder_of(upstream)
        plan.append((name, "balance" if "balance" in wanted and reads == anchor and name != "balance" else reads))
    return plan


def check_chain(results: dict[str, dict], order: list[str] | None = None) -> None:
    """rows_in(next) == rows_out(previous) for consecutive stages of this run."""
    names = [n for n in (order or STAGES) if n in results]
    for prev, nxt in zip(names, names[1:]):
        if results[nxt]["rows_in"] != results[prev]["rows_out"]:
            raise StaleStageError(
                f"{nxt} consumed {results[nxt]['rows_in']:,} rows but {prev} now keeps {results[prev]['rows_out']:,}: "
                f"{nxt} was built from an older {prev} output; rerun with --overwrite"
            )


def _sample_inputs(cfg: Config, root: str) -> tuple[list[str], list[str]]:
    from curation.sample.crawl_files import write_sample

    sample_dir = storage.join(root, "input")  # local or s3://, like every stage folder
    image_host = f"http://127.0.0.1:{cfg.pipeline.sample_image_port}"
    manifest = write_sample(sample_dir, pages=cfg.pipeline.sample_pages, image_host=image_host, options=cfg.storage.resolved())
    log.info("pipeline: embedded sample written to %s (%d pages)", sample_dir, manifest["pages"])
    return [storage.join(sample_dir, "crawl")], manifest["image_names"]


def _draw_sample_images(cache: str, names: list[str]) -> None:
    """The sample's images drawn before its download stage fetches them (one process per core)."""
    from curation.sample.images import draw_images

    started = time.time()
    drawn = draw_images(cache, names, progress=lambda done, total: log.info(
        "pipeline: drawn %d / %d sample images", done, total))
    if drawn:
        log.info("pipeline: drew %d sample images into %s in %.1f s", drawn, cache, time.time() - started)


def run(spark: SparkSession, cfg: Config, overwrite: bool = False, observer=None) -> dict:
    """Every wanted stage in order; ``observer`` (optional) gets ``start(name)`` and ``end(name, stats)``
    around each stage (bench/pipeline.py measures stages through it)."""
    root = storage.absolute(cfg.pipeline.run_root)
    opts = cfg.storage.resolved()
    storage.check_shared(root, spark.sparkContext.master, opts, "[pipeline] run_root")
    wanted = list(cfg.pipeline.stages) or list(DEFAULT_STAGES)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ConfigError(f"[pipeline] stages: unknown stage(s) {unknown}; the pipeline has {list(STAGES)}")
    inputs = [storage.absolute(i) for i in cfg.pipeline.inputs]
    image_names: list[str] = []
    if cfg.pipeline.sample:
        sample, image_names = _sample_inputs(cfg, root)
        inputs += sample
    if not inputs:
        raise ConfigError("no inputs: set [pipeline] inputs = [...] or sample = true in the config")
    started = time.time()
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as scope:
        if cfg.pipeline.sample and "download" in wanted:  # the sample's image links point at this server
            from curation.sample.images import ImageServer, sample_routes

            cache = cfg.pipeline.sample_image_cache or scope.enter_context(
                tempfile.TemporaryDirectory(prefix="curation-sample-images-"))
            if not StageDir(storage.join(root, "download"), "download", opts).is_complete():
                _draw_sample_images(cache, image_names)
            scope.enter_context(ImageServer(sample_routes(image_names, cache_dir=cache), cfg.pipeline.sample_image_port))
        plan = run_order(wanted, cfg.balance.after)
        for name, reads in plan:
            job = importlib.import_module(STAGES[name])
            stage_inputs = inputs if reads is None else [storage.join(root, reads)]
            log.info("pipeline: stage %s", name)
            if observer is not None:
                observer.start(name)
            results[name] = job.run(spark, stage_inputs, storage.join(root, name), cfg, overwrite=overwrite,
                                    redo_stale=cfg.pipeline.redo_stale)
            if observer is not None:
                observer.end(name, results[name])
    check_chain(results, [name for name, _ in plan])
    manifest = {
        "version": __version__,
        "python": platform.python_version(),
        "spark": spark.version,
        "master": spark.sparkContext.master,
        "run_root": root,
        "inputs": inputs,
        "config": cfg.to_dict(),
        "elapsed_seconds": round(time.time() - started, 3),
        "stages": {
            name: {k: v for k, v in s.items() if k in ("rows_in", "rows_out", "rejected", "elapsed_seconds", "input_fingerprint")}
            for name, s in results.items()
        },
    }
    storage.write_bytes_atomic(storage.join(root, "_manifest.json"), json.dumps(manifest, indent=2).encode(), opts)
    from jobs.stages.report import REPORT_NAME, write_report

    write_report(root, storage.join(root, REPORT_NAME), cfg)  # covers whichever stage folders the run holds
    return manifest
