#!/usr/bin/env bash
# Submit one stage of the pipeline: ./spark-submit.sh <stage> [stage args...]
# The same arguments as `curation <stage>`. The project is zipped and shipped to the executors with
# --py-files; its third-party packages (pyarrow, fastwarc, ...) must be installed on every node (or
# shipped as a packed environment through SPARK_SUBMIT_ARGS="--archives env.tar.gz#env").
#   SPARK_MASTER       master URL (default local[*]; e.g. yarn, spark://host:7077, k8s://...)
#   SPARK_SUBMIT_ARGS  extra spark-submit arguments (--conf ..., --executor-memory ..., ...)
#   SPARK_SUBMIT       the spark-submit binary (default: $SPARK_HOME/bin/spark-submit or pyspark's)
#   PYSPARK_PYTHON     the Python of driver and executors (default: the python3 on PATH, so activate
#                      the project's virtualenv first: . .venv/bin/activate)
set -euo pipefail
STAGES="extract filter-text download dedup hash-index annotate semdedup balance select pipeline"
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  echo "stages: $STAGES"
  exit 0
fi
if [[ " $STAGES " != *" $1 "* ]]; then
  echo "error: no stage '$1'; stages: $STAGES" >&2
  exit 2
fi
stage="${1//-/_}"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYSPARK_PYTHON:-$(command -v python3 || true)}"
if [[ -z "$python" ]] || ! "$python" -c 'import pyspark' 2>/dev/null; then
  echo "error: ${python:-python3} cannot import pyspark: activate the project's virtualenv (. .venv/bin/activate) or set PYSPARK_PYTHON to a Python with the project installed" >&2
  exit 2
fi
if [[ -z "${SPARK_SUBMIT:-}" ]]; then
  if [[ -n "${SPARK_HOME:-}" ]]; then
    SPARK_SUBMIT="$SPARK_HOME/bin/spark-submit"
  else
    SPARK_SUBMIT="$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')"
  fi
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
(cd "$here" && "$python" - "$build/curation-project.zip" <<'PY'
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for pkg in ("curation", "jobs", "filters", "models", "schemas"):
        for p in sorted(pathlib.Path(pkg).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                z.write(p, p.as_posix())
PY
)
# A launcher outside jobs/: running jobs/<stage>.py as a script would put jobs/ first on sys.path,
# where a stage module named like a standard module (jobs/select.py) would shadow it.
printf 'from jobs.cli import submit_main\nsubmit_main(%s)\n' "'${stage//_/-}'" > "$build/curation_$stage.py"
export CURATION_SPARK_SUBMIT=1 PYSPARK_PYTHON="$python" PYSPARK_DRIVER_PYTHON="$python"
# shellcheck disable=SC2086
exec "$SPARK_SUBMIT" --master "${SPARK_MASTER:-local[*]}" --name "curation-$stage" \
  --py-files "$build/curation-project.zip" ${SPARK_SUBMIT_ARGS:-} "$build/curation_$stage.py" "$@"
