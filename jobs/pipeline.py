"""`curation pipeline`: every stage in order, each into RUN_ROOT/<stage>/, with a run manifest."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time

from pyspark.sql import SparkSession

from curation import __version__, storage
from curation.config import Config

log = logging.getLogger(__name__)


def _extract(spark: SparkSession, cfg: Config, inputs: list[str], out: str, overwrite: bool) -> dict:
    from jobs import extract

    return extract.run(spark, inputs, out, cfg, overwrite=overwrite)


def _filter_text(spark: SparkSession, cfg: Config, inputs: list[str], out: str, overwrite: bool) -> dict:
    from jobs import filter_text

    return filter_text.run(spark, inputs[0], out, cfg, overwrite=overwrite)


def _download(spark: SparkSession, cfg: Config, inputs: list[str], out: str, overwrite: bool) -> dict:
    from jobs import download

    return download.run(spark, inputs[0], out, cfg, overwrite=overwrite)


def _dedup(spark: SparkSession, cfg: Config, inputs: list[str], out: str, overwrite: bool) -> dict:
    from jobs import dedup

    return dedup.run(spark, inputs[0], out, cfg, overwrite=overwrite)  # blocklist: [dedup] blocklist


def _annotate(spark: SparkSession, cfg: Config, inputs: list[str], out: str, overwrite: bool) -> dict:
    from jobs import annotate

    return annotate.run(spark, inputs, out, cfg, overwrite=overwrite)


# stage name -> (runner, the stage whose output it reads; None = the crawl inputs)
STAGES = {
    "extract": (_extract, None),
    "filter-text": (_filter_text, "extract"),
    "download": (_download, "filter-text"),
    "dedup": (_dedup, "download"),
    "annotate": (_annotate, "dedup"),
}


def run(spark: SparkSession, cfg: Config, overwrite: bool = False) -> dict:
    root = cfg.pipeline.run_root
    opts = cfg.storage.resolved()
    inputs = list(cfg.pipeline.inputs)
    if cfg.pipeline.sample:
        from curation.sample import write_sample

        sample_dir = storage.join(root, "input")  # local or s3://, like every stage folder
        image_host = f"http://127.0.0.1:{cfg.pipeline.sample_image_port}"
        manifest = write_sample(sample_dir, pages=cfg.pipeline.sample_pages, image_host=image_host, options=opts)
        image_names = manifest["image_names"]
        inputs.append(storage.join(sample_dir, "crawl"))
        log.info("pipeline: embedded sample written to %s (%d pages)", sample_dir, manifest["pages"])
    if not inputs:
        raise ValueError("no inputs: set [pipeline] inputs = [...] or sample = true in the config")
    wanted = list(cfg.pipeline.stages) or list(STAGES)
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the pipeline has {list(STAGES)}")
    started = time.time()
    results: dict[str, dict] = {}
    images = contextlib.nullcontext()
    if cfg.pipeline.sample and "download" in wanted:  # the sample's image links point at this server
        from curation.images_sample import ImageServer, sample_routes

        images = ImageServer(sample_routes(image_names), cfg.pipeline.sample_image_port)
    with images:
        for name in STAGES:
            if name not in wanted:
                continue
            runner, upstream = STAGES[name]
            stage_inputs = inputs if upstream is None else [storage.join(root, upstream)]
            log.info("pipeline: stage %s", name)
            results[name] = runner(spark, cfg, stage_inputs, storage.join(root, name), overwrite)
    manifest = {
        "version": __version__,
        "python": platform.python_version(),
        "spark": spark.version,
        "inputs": inputs,
        "config": cfg.to_dict(),
        "elapsed_seconds": round(time.time() - started, 3),
        "stages": {
            name: {k: v for k, v in s.items() if k in ("rows_in", "rows_out", "rejected", "elapsed_seconds")}
            for name, s in results.items()
        },
    }
    storage.write_bytes_atomic(storage.join(root, "_manifest.json"), json.dumps(manifest, indent=2).encode(), opts)
    from curation.report import REPORT_NAME, write_report

    write_report(root, storage.join(root, REPORT_NAME), cfg)  # covers whichever stage folders the run holds
    return manifest


if __name__ == "__main__":
    from jobs.cli import submit_main

    submit_main("pipeline")
