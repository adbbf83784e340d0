"""Preset selection speed: DuckDB (embedded default) against Spark SQL on the same parquet files.

Input: ``--rows`` (default 10 M) synthetic annotated rows (the ANNOTATED schema; image_bytes null, which
selection never reads) in ten parquet files, generated once by DuckDB from hashes of the row number
(deterministic) and reused from ``--data`` on later runs.

Each built-in preset is timed as ``curation select`` runs it, minus process start: the counting query
(rows in, rows kept, rows per condition) plus the sorted uid list written as parquet. Both engines run
each preset ``--repeat`` times (Spark ``local[N]`` after one untimed warm-up run: JVM JIT, Python workers,
file listing); the best and the median of each are printed and the ratio is Spark's best over DuckDB's
best. The two uid lists are compared for equality.

    python bench/presets.py [--rows 10000000] [--data /tmp/curation-bench-select] [--repeat 3] [--check]

``--check`` exits 1 unless DuckDB is >= 5x Spark and < 2 s on every preset.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from jobs.stages.select import input_files, uid_query
from jobs.stages.preset_query import DuckDBEngine, count, input_schema
from schemas import UID
from filters.presets import builtin_presets

FILES = 10
TARGET_RATIO = 5.0
TARGET_SECONDS = 2.0


def _u(k: int) -> str:
    """A uniform [0, 1) number per row from a hash of (row, k): the same data on every run."""
    return f"((hash(i, {k}) % 1000000) / 1000000.0)"


GENERATE = f"""
SELECT
  i::BIGINT AS id,
  'https://img.example.com/' || i || '.jpg' AS url,
  'a synthetic caption number ' || i AS text,
  (200 + {_u(1)} * {_u(1)} * 2000)::INT AS width,
  (200 + {_u(2)} * {_u(2)} * 2000)::INT AS height,
  printf('%016x', hash(i, 99)) AS image_phash,
  (20 + {_u(3)} * 120)::INT AS text_length,
  (3 + {_u(3)} * {_u(3)} * 40)::INT AS word_count,
  (5 + {_u(3)} * 50)::INT AS num_tokens_bert,
  (5 + {_u(3)} * 50)::INT AS num_tokens_gpt,
  CASE WHEN {_u(4)} < 0.01 THEN NULL WHEN {_u(4)} < 0.7 THEN 0 ELSE (1 + {_u(4)} * 10)::INT % 4 END AS num_faces,
  (0.15 + {_u(5)} * 0.25)::FLOAT AS clip_similarity_vitb32,
  (0.10 + {_u(6)} * 0.30)::FLOAT AS clip_similarity_vitl14,
  ({_u(9)} * {_u(9)} * {_u(9)})::FLOAT AS nsfw_score_opennsfw2,
  ({_u(10)} * {_u(10)})::FLOAT AS nsfw_score_gantman,
  ({_u(8)} * {_u(8)})::FLOAT AS watermark_score,
  (3 + {_u(7)} * 4)::FLOAT AS aesthetic_score_laion_v2,
  md5(i::VARCHAR) AS uid,
  NULL::BLOB AS image_bytes
FROM range($lo, $hi) t(i)
"""


def generate(data: Path, rows: int) -> list[str]:
    marker = data / f"_rows-{rows}"
    if not marker.exists():
        data.mkdir(parents=True, exist_ok=True)
        for old in data.glob("*.parquet"):
            old.unlink()
        con = duckdb.connect()
        started = time.perf_counter()
        step = -(-rows // FILES)
        for k in range(FILES):
            lo, hi = k * step, min(rows, (k + 1) * step)
            con.sql(GENERATE, params={"lo": lo, "hi": hi}).to_parquet(str(data / f"part-{k:05d}.parquet"), compression="zstd")
        marker.touch()
        print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f} s -> {data}")
    return input_files(str(data))


def select_once(engine, preset, schema, out: str) -> tuple[float, int]:
    """What `curation select` does per preset: count, then write the sorted uid list."""
    started = time.perf_counter()
    selection = count(engine, preset, schema)
    engine.write_uids(uid_query(engine, selection.sql), selection.sql.params, out)
    return time.perf_counter() - started, selection.rows_out


def time_presets(engine, presets, schema, work: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each preset ``repeat`` times: {preset: [seconds per run]}, {preset: rows kept}; run r writes work/preset/r."""
    times: dict[str, list[float]] = {}
    kept: dict[str, int] = {}
    for name, preset in presets.items():
        for r in range(repeat):
            seconds, rows = select_once(engine, preset, schema, str(work / name / str(r)))
            assert kept.setdefault(name, rows) == rows, (name, rows, kept[name])
            times.setdefault(name, []).append(seconds)
    return times, kept


def read_list(folder: str):
    parts = sorted(Path(folder).glob("part-*.parquet"))
    return pq.ParquetDataset(parts).read(columns=[UID]) if parts else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "curation-bench-select"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()

    files = generate(Path(args.data), args.rows)
    schema = input_schema(files)
    presets = builtin_presets()
    work = Path(tempfile.mkdtemp(prefix="bench-select-"))

    duck = DuckDBEngine.for_files(files)
    duck_times, kept = time_presets(duck, presets, schema, work / "duckdb", args.repeat)

    from jobs.select import SparkEngine
    from jobs.session import build_spark_session

    spark = build_spark_session(args.spark_master, "bench-select", {"spark.ui.enabled": "false"})
    columns = sorted({UID, *(c for p in presets.values() for c in p.columns)})
    spark_engine = SparkEngine(spark, files, columns, None)
    first = next(iter(presets.values()))
    select_once(spark_engine, first, schema, str(work / "spark-warm-up"))  # JVM JIT, Python workers, file listing
    spark_times, spark_kept = time_presets(spark_engine, presets, schema, work / "spark", args.repeat)
    spark.stop()
    assert spark_kept == kept, (spark_kept, kept)

    print(f"{args.rows:,} annotated rows in {len(files)} parquet files; {os.cpu_count()} CPUs; Spark {args.spark_master}; "
          f"best and median of {args.repeat} runs each")
    print(f"{'preset':<18}{'kept':>12}{'duckdb best':>13}{'median':>9}{'spark best':>12}{'median':>9}{'spark/duckdb':>14}  same uids")
    ok = True
    for name in presets:
        best, median = min(duck_times[name]), statistics.median(duck_times[name])
        spark_best, spark_median = min(spark_times[name]), statistics.median(spark_times[name])
        same = read_list(str(work / "duckdb" / name / "0")) == read_list(str(work / "spark" / name / "0"))
        ratio = spark_best / best
        ok &= same and ratio >= TARGET_RATIO and best < TARGET_SECONDS
        print(f"{name:<18}{kept[name]:>12,}{best:>12.2f}s{median:>8.2f}s{spark_best:>11.2f}s{spark_median:>8.2f}s{ratio:>13.1f}x  {same}")
    print(f"targets: duckdb best >= {TARGET_RATIO:g}x spark best and < {TARGET_SECONDS:g} s per preset: {'met' if ok else 'NOT met'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
