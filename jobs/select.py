"""`select` job: a preset over annotated shards with DuckDB (embedded default) or Spark SQL (the cluster
path). Both run the SQL that ``filters.presets`` renders; ``jobs.stages.select`` does the rest."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from curation import storage
from jobs.stages.config import Config, ConfigError
from jobs.stages.select import Materialize, input_files, run_select
from jobs.stages.preset_query import VIEW, DuckDBEngine, input_schema
from curation.storage import StorageOptions
from curation.output.shards import part_name, write_parquet
from filters.presets import SPARK, Scalar, get_preset, load_presets
from schemas import UID, UID_LIST

log = logging.getLogger(__name__)


def _read_files(batches: Iterator[pa.RecordBatch], columns: list[str], options: StorageOptions) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for uri in batch.column("uri").to_pylist():
            fs, path = storage.filesystem(uri, options)
            with fs.open_input_file(path) as fh:
                yield from pq.ParquetFile(fh).iter_batches(columns=columns)


def read_input(spark: SparkSession, files: list[str], columns: list[str], options: StorageOptions) -> DataFrame:
    """Spark's parquet reader for local files; object-store files through pyarrow, one task per file
    (the project reads s3:// with pyarrow's filesystem, not Hadoop's s3a)."""
    if not storage.is_s3(files[0]):
        return spark.read.parquet(*[storage.filesystem(f)[1] for f in files]).select(*columns)
    schema = input_schema(files, options)
    spark_schema = from_arrow_schema(pa.schema([schema.field(c) for c in columns]))
    listing = spark.createDataFrame([(f,) for f in files], "uri string").repartition(len(files))
    return listing.mapInArrow(partial(_read_files, columns=columns, options=options), spark_schema)


def _write_uid_part(batches: Iterator[pa.RecordBatch], out_dir: str, options: StorageOptions) -> Iterator[pa.RecordBatch]:
    """After ORDER BY, partition i holds the i-th uid range: its part file keeps the list in name order."""
    rows = [b for b in batches if b.num_rows]
    if not rows:
        return
    part = storage.join(out_dir, part_name(TaskContext.get().partitionId()))
    written = write_parquet(part, rows, UID_LIST.arrow_schema(), options, dictionary=False)
    yield pa.RecordBatch.from_pylist([{"part": part, "rows": written}])


class SparkEngine:
    """Spark SQL over the input registered as a temporary view."""

    dialect = SPARK
    name = "spark"

    def __init__(self, spark: SparkSession, files: list[str], columns: list[str], options: StorageOptions) -> None:
        self.spark = spark
        self.options = options
        read_input(spark, files, columns, options).createOrReplaceTempView(VIEW)

    def query_one(self, sql: str, params: Mapping[str, Scalar] | None = None) -> tuple:
        return tuple(self.spark.sql(sql, args=dict(params or {})).first())

    def write_uids(self, sql: str, params: Mapping[str, Scalar], out_dir: str) -> list[str]:
        writer = partial(_write_uid_part, out_dir=out_dir, options=self.options)
        written = self.spark.sql(sql, args=dict(params)).mapInArrow(writer, "part string, rows long").collect()
        return sorted(r.part for r in written)


def run(
    spark: SparkSession | None,
    cfg: Config,
    input_uri: str,
    preset_name: str,
    output: str,
    materialize: bool = False,
    overwrite: bool = False,
) -> dict:
    """Select ``preset_name`` from ``input_uri`` into ``output``; ``spark`` is needed for engine = spark."""
    options = cfg.storage.resolved()
    preset = get_preset(load_presets(cfg.select.preset_file), preset_name)
    files = input_files(input_uri, options)
    if cfg.select.engine == "spark":
        if spark is None:
            raise ConfigError("[select] engine 'spark' needs a Spark session")
        columns = list(dict.fromkeys([UID, *[c for c in preset.columns if c in input_schema(files, options).names]]))
        engine = SparkEngine(spark, files, columns, options)
    else:
        engine = DuckDBEngine.for_files(files, options)
    plan = Materialize(cfg.select.rows_per_shard, cfg.select.webdataset) if materialize else None
    return run_select(engine, preset, input_uri, files, output, options, plan, overwrite)

