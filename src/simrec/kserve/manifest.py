"""The cluster form of the endpoint: a KServe InferenceService whose predictor is the serve image as a
custom container. A plain function of its inputs (standard library only), so the deploy step, the tests
and the Helm chart's agreement test all see the same manifest.

How KServe runs it (serving.kserve.io/v1beta1, Serverless deployment mode):
- A custom predictor takes its model through the `STORAGE_URI` variable of the container named
  `kserve-container`: KServe's storage initializer (an init container) downloads that URI into
  /mnt/models and the variable then reads /mnt/models. The URI is the registered MLflow model folder,
  so the recommender package is at /mnt/models/artifacts/package (images/serve/Dockerfile).
- Every change of the predictor's pod template is a new Knative revision. `canaryTrafficPercent` sends
  that share of traffic to the latest ready revision and the rest to the last revision rolled out with
  100%; removing it promotes the latest revision; 0 pins traffic back to the previous rolled-out one.
  KServe honours it in Serverless mode only (RawDeployment silently ignores it), hence the annotation.
- The admin routes are off: the pod gets no SIMREC_ADMIN_TOKEN. A rollout goes through the API server
  (a new revision), never through a running pod's /admin/deploy.
- Prometheus metrics: KServe turns its scraping annotations into the pod's prometheus.io ones (the
  port and path of simrec serve's /metrics); a Prometheus configured to scrape annotated pods reads them.
- A vector engine (the profile's evaluate.vector_engine): simrec serve gets its URI as
  --vector-engine-uri (the profile's, not only the one a package's manifest recorded) and its token from
  the Secret evaluate reads, by secretKeyRef (which Knative allows; fieldRef it does not, below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simrec.records import ENGINE_TOKEN_KEY, ENGINE_TOKEN_VARIABLE
from simrec.serving.cli import MODEL_THREADS_VARIABLE, TOKEN_VARIABLE

API_VERSION = "serving.kserve.io/v1beta1"
GROUP, VERSION = API_VERSION.split("/")
KIND = "InferenceService"
PLURAL = "inferenceservices"
CONTAINER_NAME = "kserve-container"  # the name KServe looks for (STORAGE_URI, probes, metrics)
STORAGE_URI_VARIABLE = "STORAGE_URI"
MODEL_MOUNT = "/mnt/models"
PACKAGE_PATH = f"{MODEL_MOUNT}/artifacts/package"  # where the pyfunc folder keeps the package
PORT = 8080
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"  # latest-/prev- URLs per revision
METRICS_PATH = "/metrics"
SCRAPE_ANNOTATIONS = {
    "serving.kserve.io/enable-prometheus-scraping": "true",
    "prometheus.kserve.io/port": str(PORT),
    "prometheus.kserve.io/path": METRICS_PATH,
}
MODEL_NAME_LABEL = "simrec.io/model-name"
MODEL_VERSION_LABEL = "simrec.io/model-version"
SERVE_UID = 1000  # the serve image's user (images/serve/Dockerfile): numeric, so runAsNonRoot is checkable


@dataclass(frozen=True)
class Resources:
    """Kubernetes quantities of the predictor container."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"


@dataclass(frozen=True)
class ServedModel:
    """A registered model version and where its files are (a URI KServe's storage initializer reads)."""

    name: str
    version: str
    storage_uri: str


@dataclass(frozen=True)
class VectorEngineAccess:
    """How the predictor reaches the vector engine of packages whose vectors are in one."""

    uri: str  # e.g. http://milvus.milvus:19530, as the predictor's namespace reaches it
    token_secret: str | None = None  # Secret whose key ENGINE_TOKEN_KEY is the engine's token; None: none


@dataclass(frozen=True)
class Endpoint:
    """The InferenceService that serves the model: everything but the model version."""

    name: str
    namespace: str
    image: str
    token_secret: str = "simrec-serve"  # Secret with key `token`: the bearer token of the endpoint
    token_key: str = "token"
    service_account: str | None = None  # e.g. one carrying the S3 credentials the storage initializer uses
    min_replicas: int = 1  # not 0: a cold start loads the model and the index
    max_replicas: int | None = None
    resources: Resources = Resources()
    vector_engine: VectorEngineAccess | None = None  # None: packages' own URIs, no token


def default_image(project_version: str) -> str:
    return f"simrec/serve:{project_version}"


def render_inference_service(
    endpoint: Endpoint, model: ServedModel, canary_percent: int | None = None
) -> dict[str, Any]:
    """The InferenceService manifest serving `model`. canary_percent: the share of traffic the new
    revision gets while the previous rolled-out revision keeps the rest (None: all of it once ready)."""
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent must be within 0..100, got {canary_percent}")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": _metadata(endpoint, model),
        "spec": {"predictor": _predictor(endpoint, model, canary_percent)},
    }


def _metadata(endpoint: Endpoint, model: ServedModel) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "namespace": endpoint.namespace,
        "labels": {
            "app.kubernetes.io/name": "simrec",
            "app.kubernetes.io/component": "serve",
            MODEL_NAME_LABEL: model.name,
            MODEL_VERSION_LABEL: model.version,
        },
        "annotations": {
            DEPLOYMENT_MODE_ANNOTATION: "Serverless",
            TAG_ROUTING_ANNOTATION: "true",
            **SCRAPE_ANNOTATIONS,
        },
    }


def _predictor(endpoint: Endpoint, model: ServedModel, canary_percent: int | None) -> dict[str, Any]:
    predictor: dict[str, Any] = {"minReplicas": endpoint.min_replicas}
    if endpoint.max_replicas is not None:
        predictor["maxReplicas"] = endpoint.max_replicas
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    if endpoint.service_account:
        predictor["serviceAccountName"] = endpoint.service_account
    predictor["containers"] = [_container(endpoint, model)]
    return predictor


def _container(endpoint: Endpoint, model: ServedModel) -> dict[str, Any]:
    """simrec serve in the serve image, as the container KServe gives the model to."""
    return {
        "name": CONTAINER_NAME,
        "image": endpoint.image,
        # The image's entrypoint is `simrec`; the version label is what every answer names.
        "args": [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--package",
            PACKAGE_PATH,
            "--model-name",
            model.name,
            "--version",
            model.version,
            *(["--vector-engine-uri", endpoint.vector_engine.uri] if endpoint.vector_engine else []),
        ],
        "env": _container_env(endpoint, model),
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": endpoint.resources.cpu_request, "memory": endpoint.resources.memory_request},
            "limits": {"cpu": endpoint.resources.cpu_limit, "memory": endpoint.resources.memory_limit},
        },
        # Ready once the package is loaded and its smoke queries passed; live as soon as it listens.
        "readinessProbe": _probe("/v2/health/ready", initial_delay=5, period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", initial_delay=30, period=10, failures=3),
        "securityContext": {
            "runAsUser": SERVE_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _container_env(endpoint: Endpoint, model: ServedModel) -> list[dict[str, Any]]:
    engine = endpoint.vector_engine
    engine_token = (
        [_secret_env(ENGINE_TOKEN_VARIABLE, engine.token_secret, ENGINE_TOKEN_KEY)]
        if engine and engine.token_secret
        else []
    )
    return [
        {"name": STORAGE_URI_VARIABLE, "value": model.storage_uri},
        _secret_env(TOKEN_VARIABLE, endpoint.token_secret, endpoint.token_key),
        # The container's CPU limit (rounded up), not the node's CPU count that the process sees.
        # A literal: Knative refuses fieldRef/resourceFieldRef env unless its kubernetes.podspec-fieldref
        # flag is on (knative/serving pkg/apis/serving/fieldmask.go; off by default and in Kubeflow 1.10).
        {"name": MODEL_THREADS_VARIABLE, "value": str(cpu_threads(endpoint.resources.cpu_limit))},
        *engine_token,
    ]


def _secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def cpu_threads(quantity: str) -> int:
    """A Kubernetes CPU quantity ("2", "1500m", "0.5") rounded up to whole threads, as resourceFieldRef
    with divisor 1 would give."""
    millicores = int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)
    return max(1, math.ceil(millicores / 1000))


def _probe(path: str, *, initial_delay: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT, "scheme": "HTTP"},
        "initialDelaySeconds": initial_delay,
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
