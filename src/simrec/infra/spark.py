"""The one place a Spark session is made: Delta Lake enabled, Arrow on, local-friendly defaults.

Delta's jars (io.delta:delta-spark_2.12), and any SIMREC_SPARK_PACKAGES (comma-separated Maven
coordinates, e.g. hadoop-aws for an s3a:// lake), are resolved by Spark from Maven Central on first use and
cached in ~/.ivy2 (SIMREC_IVY_DIR overrides); cluster images resolve them at build time (images/steps).
SIMREC_SPARK_MASTER, SIMREC_SPARK_DRIVER_MEMORY and SIMREC_SPARK_CONF come from the pipeline (conf/)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

from simrec.infra.errors import InputError


def driver_pod_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Spark settings for a driver in a task pod that starts executor pods, from the pod's own fields (the
    pipeline passes them through the downward API: simrec.pipeline.definition.DRIVER_POD_FIELDS)."""
    settings = {}
    if pod_ip := environ.get("SIMREC_POD_IP"):  # executor pods call the driver back at this address
        settings |= {"spark.driver.host": pod_ip, "spark.driver.bindAddress": "0.0.0.0"}
    # Executor pods go in the task pod's namespace (Spark's default is `default`, where the pipeline's
    # service account may create nothing) and are owned by it, so none outlives the driver holding GPUs.
    if namespace := environ.get("SIMREC_POD_NAMESPACE"):
        settings["spark.kubernetes.namespace"] = namespace
    if pod_name := environ.get("SIMREC_POD_NAME"):
        settings["spark.kubernetes.driver.pod.name"] = pod_name
    return settings


def get_spark(app_name: str = "simrec") -> SparkSession:
    master = os.environ.get("SIMREC_SPARK_MASTER", "local[*]")
    # A local session on a workstation binds to loopback (a laptop's other interfaces come and go); never
    # in a pod, where executors and Horovod's rendezvous must reach the pod's own address.
    if master.startswith("local") and "KUBERNETES_SERVICE_HOST" not in os.environ:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this environment's interpreter (TensorFlow, Horovod), not whatever
    # `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.driver.memory", os.environ.get("SIMREC_SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    # SIMREC_SPARK_CONF: JSON of further settings (executor pods, GPUs, volumes for a k8s:// master).
    try:
        extra = json.loads(os.environ.get("SIMREC_SPARK_CONF") or "{}")
    except json.JSONDecodeError as exc:
        raise InputError(f"SIMREC_SPARK_CONF is not JSON: {exc}") from exc
    for key, value in extra.items():
        builder = builder.config(key, str(value))
    for key, value in driver_pod_settings(os.environ).items():
        builder = builder.config(key, value)
    if ivy_dir := os.environ.get("SIMREC_IVY_DIR"):
        builder = builder.config("spark.jars.ivy", ivy_dir)
    packages = [p for p in os.environ.get("SIMREC_SPARK_PACKAGES", "").split(",") if p]
    spark = configure_spark_with_delta_pip(builder, extra_packages=packages).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
