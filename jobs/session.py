"""The one injectable Spark session builder (cc2dataset's habit): jobs take a session, tests pass local[2]."""

from __future__ import annotations

import logging
import os
import shutil
import sys

from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from curation.errors import CurationError

log = logging.getLogger(__name__)

DEFAULT_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
}


class SparkStartError(CurationError):
    """Spark could not start on this machine (no usable Java)."""


JAVA_HELP = "install Java 17 (e.g. apt-get install openjdk-17-jre-headless) and point JAVA_HOME at it, or unset JAVA_HOME to use the java on PATH"


def _check_java() -> None:
    """Spark needs a JVM: say so in one line before its launcher script fails with a shell error."""
    home = os.environ.get("JAVA_HOME")
    if home and not os.access(os.path.join(home, "bin", "java"), os.X_OK):
        raise SparkStartError(f"JAVA_HOME={home} has no bin/java: {JAVA_HELP}")
    if not home and shutil.which("java") is None:
        raise SparkStartError(f"no java on PATH and JAVA_HOME is unset: Spark needs Java 17; {JAVA_HELP}")


def build_spark_session(
    master: str | None = "local[*]",
    app_name: str = "curation",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active session or build one. ``master=None`` leaves it to spark-submit."""
    # local executors run this interpreter, so they see the same installed packages
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master and master.startswith("local"):
        # one machine: bind the driver to loopback, never to another address of this machine
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    if os.environ.get("CURATION_SPARK_SUBMIT"):
        master = None  # spark-submit.sh chose the master; a config default must not override it
    if master:
        builder = builder.master(master)
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        if key == "spark.driver.memory" and os.environ.get("CURATION_SPARK_SUBMIT"):
            continue  # the driver JVM is already running under spark-submit
        builder = builder.config(key, value)
    _check_java()
    try:
        spark = builder.getOrCreate()
    except PySparkRuntimeError as e:
        if "JAVA_GATEWAY_EXITED" not in str(e) and getattr(e, "getErrorClass", lambda: None)() != "JAVA_GATEWAY_EXITED":
            raise
        java = os.environ.get("JAVA_HOME") or "unset (java from PATH)"
        raise SparkStartError(f"Spark's Java process did not start (JAVA_HOME={java}): {JAVA_HELP}") from None
    spark.sparkContext.setLogLevel("WARN")
    return spark
