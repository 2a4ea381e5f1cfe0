"""The one place a Spark session is made: Delta Lake enabled, Arrow on, local-friendly defaults.

Delta's jars (io.delta:delta-spark_2.12), and any SIMREC_SPARK_PACKAGES (comma-separated Maven
coordinates, e.g. hadoop-aws for an s3a:// lake), are resolved by Spark from Maven Central on first use and
cached in ~/.ivy2 (SIMREC_IVY_DIR overrides); cluster images resolve them at build time (images/steps)."""

from __future__ import annotations

import os
import sys

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession


def get_spark(app_name: str = "simrec") -> SparkSession:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this environment's interpreter (TensorFlow, Horovod), not whatever
    # `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(os.environ.get("SIMREC_SPARK_MASTER", "local[*]"))
        .config("spark.driver.memory", os.environ.get("SIMREC_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    if ivy_dir := os.environ.get("SIMREC_IVY_DIR"):
        builder = builder.config("spark.jars.ivy", ivy_dir)
    packages = [p for p in os.environ.get("SIMREC_SPARK_PACKAGES", "").split(",") if p]
    spark = configure_spark_with_delta_pip(builder, extra_packages=packages).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
