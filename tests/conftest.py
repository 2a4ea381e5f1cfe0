import os

import pytest

pytest_plugins = ["milvus_server"]  # the `milvus` fixture: a milvus-lite server per test module

# Set before anything starts MLflow or Spark, in every environment the suite runs in.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory):
    """One real Kubernetes API server (etcd + kube-apiserver, KServe's and Argo CD's CRDs) for the
    session, started on first use; tests keep apart by namespace (kube_api.unique_namespace)."""
    from kube_api import KubeAPI

    with KubeAPI.running(tmp_path_factory.mktemp("kube")) as api:
        yield api
