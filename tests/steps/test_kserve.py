"""The cluster deploy path: the rendered InferenceService, and the canary rollout / rollback against a real
kube-apiserver (tests/kube_api.py) with KServe's own CRD, as the pipeline chart's service account under the
chart's Role, reached through the real `kubernetes` client and a kubeconfig; KServe's status is played by a
watch-driven controller (kserve_controller.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_charts import helm_program, one, render
from kserve_controller import KServeController
from kube_api import KubeAPI, unique_namespace

from simrec.config import ConfigError, KServeConfig, load_config
from simrec.infra.errors import InputError
from simrec.kserve import manifest as kserve
from simrec.kserve import rollout
from simrec.kserve import settings as kserve_settings
from simrec.kserve.api import InferenceServices
from simrec.kserve.manifest import Endpoint, Resources, ServedModel, render_inference_service
from simrec.kserve.rollout import RolloutFailed
from simrec.registry.models import cluster_uri

ROOT = Path(__file__).resolve().parents[2]
SRC = str(ROOT / "src")
ENDPOINT = Endpoint(
    name="simrec",
    namespace="serving",
    image="registry.example/simrec/serve:0.1.0",
    service_account="simrec-serve",
    max_replicas=3,
    resources=Resources(cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="3Gi"),
)
FAST = {"timeout_s": 20.0, "poll_s": 0.05}


def model(version: str, where: str = "ok") -> ServedModel:
    return ServedModel("simrec", version, f"s3://mlflow/1/models/m-{version}-{where}/artifacts")


def manifest(version: str, where: str = "ok") -> dict[str, Any]:
    return render_inference_service(ENDPOINT, model(version, where))


# -- the manifest ---------------------------------------------------------------------------------------


def test_manifest_serves_the_model_from_its_storage_uri_with_the_token_secret():
    isvc = render_inference_service(ENDPOINT, model("3"), canary_percent=10)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert isvc["metadata"]["name"] == "simrec" and isvc["metadata"]["namespace"] == "serving"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    # Prometheus scrapes the serve command's /metrics on its port
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert (annotations["prometheus.kserve.io/port"], annotations["prometheus.kserve.io/path"]) == (
        "8080",
        "/metrics",
    )
    assert isvc["metadata"]["labels"]["simrec.io/model-version"] == "3"
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert predictor["serviceAccountName"] == "simrec-serve"
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the container KServe gives STORAGE_URI's files
    assert container["image"] == ENDPOINT.image
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--package") + 1] == "/mnt/models/artifacts/package"
    assert args[args.index("--version") + 1] == "3" and args[args.index("--model-name") + 1] == "simrec"
    assert args[args.index("--port") + 1] == "8080" and args[args.index("--host") + 1] == "0.0.0.0"
    env = {e["name"]: e for e in container["env"]}
    assert "SIMREC_ADMIN_TOKEN" not in env  # no admin routes on a cluster: rollouts go through KServe
    assert env["STORAGE_URI"]["value"] == "s3://mlflow/1/models/m-3-ok/artifacts"
    secret = env["SIMREC_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "simrec-serve", "key": "token"}
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/v2/health/ready",
        "port": 8080,
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/v2/health/live",
        "port": 8080,
        "scheme": "HTTP",
    }
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    # plain data, the same every time, optional parts left out when unset
    assert json.loads(json.dumps(isvc)) == isvc == render_inference_service(ENDPOINT, model("3"), 10)
    bare = render_inference_service(Endpoint("simrec", "serving", "img"), model("3"))["spec"]["predictor"]
    assert not {"canaryTrafficPercent", "maxReplicas", "serviceAccountName"} & set(bare)
    with pytest.raises(ValueError, match="canary_percent"):
        render_inference_service(ENDPOINT, model("3"), canary_percent=101)


# KServe's ComponentExtensionSpec (pkg/apis/serving/v1beta1/component.go): the predictor's fields besides
# the pod spec's and the model implementations'.
COMPONENT_EXTENSION = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def _check_fields(data: Any, type_name: str, where: str) -> None:
    """Every key is a field of the Kubernetes type (the client's models hold the API's schema)."""
    from kubernetes import client

    if type_name.startswith("list["):
        for i, item in enumerate(data):
            _check_fields(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict(") or type_name in {"str", "int", "bool", "float", "object"}:
        return
    cls = getattr(client, type_name)
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json, f"{where}.{key} is not a field of {type_name}"
        _check_fields(value, cls.openapi_types[by_json[key]], f"{where}.{key}")


def test_manifest_fields_are_inferenceservice_fields():
    isvc = render_inference_service(ENDPOINT, model("3"), canary_percent=10)
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"}
    _check_fields(isvc["metadata"], "V1ObjectMeta", "metadata")
    assert set(isvc["spec"]) == {"predictor"}
    predictor = isvc["spec"]["predictor"]
    from kubernetes.client import V1PodSpec

    pod_fields = set(V1PodSpec.attribute_map.values())
    for key, value in predictor.items():
        assert key in pod_fields | COMPONENT_EXTENSION, f"spec.predictor.{key}"
        if key in pod_fields:
            _check_fields(value, V1PodSpec.openapi_types[_attr(V1PodSpec, key)], f"spec.predictor.{key}")
    # the checker can fail
    with pytest.raises(AssertionError, match="readinesProbe"):
        _check_fields({"readinesProbe": {}}, "V1Container", "container")


def _attr(cls: Any, json_name: str) -> str:
    return next(attr for attr, name in cls.attribute_map.items() if name == json_name)


def test_default_image_is_the_project_version_and_runs_the_package_kserve_downloads():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert kserve_settings.endpoint(KServeConfig(namespace="serving")).image == f"simrec/serve:{version}"
    dockerfile = (ROOT / "images" / "serve" / "Dockerfile").read_text()
    assert f'"--package", "{kserve.PACKAGE_PATH}"' in dockerfile  # the image's own default agrees
    assert re.search(r'ENTRYPOINT \["simrec"\]', dockerfile)


def test_cluster_uri_maps_proxied_artifacts_and_refuses_local_paths():
    assert cluster_uri("s3://b/1/models/m-1/artifacts") == "s3://b/1/models/m-1/artifacts"
    proxied = "mlflow-artifacts:/1/models/m-1/artifacts"
    assert cluster_uri(proxied, "s3://simrec/mlflow/") == "s3://simrec/mlflow/1/models/m-1/artifacts"
    assert cluster_uri("mlflow-artifacts://mlflow:5000/1/x", "gs://a") == "gs://a/1/x"
    with pytest.raises(InputError, match="artifacts_destination"):
        cluster_uri(proxied)
    with pytest.raises(InputError, match="KServe cannot read"):
        cluster_uri("/home/me/.simrec/mlflow-artifacts/1/models/m-1/artifacts")
    with pytest.raises(InputError, match="KServe cannot read"):
        cluster_uri("file:///tmp/model")


def test_storage_uri_of_a_registered_version(tracking):
    from simrec.registry import models as registry
    from simrec.registry.tracking import client

    mlflow = client()
    mlflow.create_registered_model("simrec")
    version = mlflow.create_model_version("simrec", "s3://bucket/1/models/m-abc/artifacts")
    assert registry.storage_uri(registry.resolve(f"simrec/{version.version}")) == (
        "s3://bucket/1/models/m-abc/artifacts"
    )


def test_configuration_validates_the_kserve_section():
    full = load_config("full").serve
    assert full.server is None and full.kserve is not None and 1 <= full.kserve.canary_percent <= 100
    both = {"SIMREC__SERVE__SERVER": "http://x", "SIMREC__SERVE__KSERVE": "{name: simrec}"}
    with pytest.raises(ConfigError, match="not both"):
        load_config("embedded", environ=both)
    with pytest.raises(ConfigError, match="canary_percent"):
        load_config("full", environ={"SIMREC__SERVE__KSERVE__CANARY_PERCENT": "0"})
    with pytest.raises(InputError, match="--kserve: not JSON"):
        kserve_settings.settings_from_json("{name")
    with pytest.raises(InputError, match="namespace"):
        kserve_settings.settings_from_json('{"namespace": "Not_A_Label"}')


def test_the_namespace_is_the_deploy_pods_own_unless_configured(tmp_path, monkeypatch):
    """Finding 5: one compiled pipeline serves from whichever namespace runs it (standalone KFP's
    `kubeflow`, a profile's namespace), read where Kubernetes tells every pod."""
    settings = KServeConfig(name="simrec")
    pod_namespace = tmp_path / "namespace"
    monkeypatch.setattr(kserve_settings, "POD_NAMESPACE_FILE", pod_namespace)
    with pytest.raises(InputError, match=r"serve\.kserve\.namespace is not set and this is not a pod"):
        kserve_settings.endpoint(settings)
    pod_namespace.write_text("team-vision\n")
    assert kserve_settings.endpoint(settings).namespace == "team-vision"
    assert (
        kserve_settings.endpoint(settings.model_copy(update={"namespace": "serving"})).namespace == "serving"
    )


@pytest.mark.parametrize(("cpu", "threads"), [("2", 2), ("1500m", 2), ("0.5", 1), ("100m", 1), ("3", 3)])
def test_model_threads_are_the_cpu_limit_rounded_up(cpu, threads):
    """Finding 6: a literal, as Knative refuses resourceFieldRef env (pkg/apis/serving/fieldmask.go)."""
    assert kserve.cpu_threads(cpu) == threads
    endpoint = dataclasses.replace(ENDPOINT, resources=Resources(cpu_request="100m", cpu_limit=cpu))
    (container,) = render_inference_service(endpoint, model("3"))["spec"]["predictor"]["containers"]
    assert {"name": "SIMREC_MODEL_THREADS", "value": str(threads)} in container["env"]


# -- rollout against a real Kubernetes API server ---------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    """A namespace in the tests' kube-apiserver with the pipeline chart's deploy RBAC, the rollout's
    kubeconfig holding a token of the chart's service account, and KServe's part played by a controller."""

    api: KubeAPI
    namespace: str
    kserve: KServeController
    account: str
    kubeconfig: Path

    def manifest(self, version: str) -> dict[str, Any]:
        endpoint = dataclasses.replace(ENDPOINT, namespace=self.namespace)
        return render_inference_service(endpoint, model(version))

    def isvc(self) -> dict[str, Any]:
        return self.api.get(f"{self.kserve.collection}/simrec")


def deploy_role(helm: Path, namespace: str, drop_verb: str | None = None) -> list[dict[str, Any]]:
    """The pipeline chart's Role and RoleBinding for the deploy step, rendered for `namespace`."""
    docs = render(helm, "simrec", None, namespace=namespace)
    role, binding = one(docs, "Role", "simrec-deploy"), one(docs, "RoleBinding", "simrec-deploy")
    if drop_verb:
        for rule in role["rules"]:
            rule["verbs"].remove(drop_verb)
    return [role, binding]


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_program()


@pytest.fixture
def cluster(kube, helm, tmp_path, monkeypatch, request):
    namespace = unique_namespace("rollout")
    kube.create_namespace(namespace)
    rbac = deploy_role(helm, namespace, getattr(request, "param", None))
    for obj in rbac:
        kube.apply(obj, namespace)
    (subject,) = rbac[1]["subjects"]
    token = kube.service_account_token(namespace, subject["name"])  # the pipeline's pods run as it
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kube.kubeconfig(token, namespace)))
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: the kubeconfig
    controller = KServeController(kube, namespace)
    yield Cluster(kube, namespace, controller, subject["name"], config)
    controller.stop()


@pytest.fixture
def services(cluster) -> InferenceServices:
    return InferenceServices()


def roll_out(cluster: Cluster, services: InferenceServices, version: str, **options: Any) -> dict[str, Any]:
    manifest = cluster.manifest(version)
    return rollout.roll_out(services, manifest, canary_percent=10, **(FAST | options))


REV1, REV2, REV3 = (f"simrec-predictor-{n:05d}" for n in (1, 2, 3))


def test_create_then_canary_then_promote(cluster, services):
    first = roll_out(cluster, services, "1")
    assert first["outcome"] == "serving" and first["revision"] == REV1
    # nothing rolled out before: KServe would give the first revision all traffic anyway
    assert "canaryTrafficPercent" not in cluster.isvc()["spec"]["predictor"]

    # Argo CD (deploy/argocd) tracks the object by a label the rollout must keep
    label = {"metadata": {"labels": {"app.kubernetes.io/instance": "simrec-serving"}}}
    path = f"{cluster.kserve.collection}/simrec"
    cluster.api.request("PATCH", path, label, content_type="application/merge-patch+json")
    seen = len(cluster.kserve.traffic_history)
    second = roll_out(cluster, services, "2")
    assert second["outcome"] == "serving" and second["revision"] == REV2
    assert second["previous_revision"] == REV1
    labels = cluster.isvc()["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "simrec-serving"
    assert labels["simrec.io/model-version"] == "2"
    # the new revision got no traffic until Ready, then its share, then all of it
    splits = [t for t in cluster.kserve.traffic_history[seen:] if REV2 in t]
    assert splits[0] == {REV1: 90, REV2: 10} and splits[-1] == {REV2: 100}
    assert "canaryTrafficPercent" not in cluster.isvc()["spec"]["predictor"]  # promoted: the field removed
    status = cluster.kserve.predictor()
    assert (status["latestRolledoutRevision"], status["previousRolledoutRevision"]) == (REV2, REV1)
    assert cluster.kserve.traffic() == {REV2: 100}


def test_canary_left_in_place_when_not_promoting(cluster, services):
    roll_out(cluster, services, "1")
    answer = roll_out(cluster, services, "2", promote=False)
    assert answer["outcome"] == "canary" and answer["canary_percent"] == 10
    assert answer["stable_revision"] == REV1 and answer["status"]["traffic"] == {REV1: 90, REV2: 10}
    assert cluster.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 10


@pytest.mark.parametrize(
    ("behaviour", "why"), [("fails", "RevisionFailed"), ("load-fails", "model load failed: ModelLoadFailed")]
)
def test_failed_revision_is_rolled_back_and_the_old_one_keeps_serving(cluster, services, behaviour, why):
    roll_out(cluster, services, "1")
    cluster.kserve.behave(REV2, behaviour)
    seen = len(cluster.kserve.traffic_history)
    with pytest.raises(RolloutFailed) as refused:
        roll_out(cluster, services, "2")
    message = str(refused.value)
    assert f"revision {REV2} failed" in message and why in message
    assert f"rolled back: {REV1} serves all traffic" in message
    record = refused.value.record
    assert record["outcome"] == "refused" and record["rollback"]["serving"] == REV1
    assert cluster.isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert not [t for t in cluster.kserve.traffic_history[seen:] if REV2 in t]  # never served
    assert cluster.kserve.traffic() == {REV1: 100}
    assert cluster.kserve.predictor()["latestRolledoutRevision"] == REV1

    # the next good version rolls out over the refused one
    third = roll_out(cluster, services, "3")
    assert third["revision"] == REV3 and third["previous_revision"] == REV1
    assert cluster.kserve.traffic() == {REV3: 100}


def test_revision_never_ready_is_rolled_back_at_the_timeout(cluster, services):
    roll_out(cluster, services, "1")
    cluster.kserve.behave(REV2, "hangs")
    with pytest.raises(RolloutFailed, match=r"not Ready with its traffic within 1 s") as refused:
        roll_out(cluster, services, "2", timeout_s=1.0)
    assert refused.value.record["rollback"] == {"canaryTrafficPercent": 0, "serving": REV1}
    assert cluster.kserve.traffic() == {REV1: 100}
    assert cluster.kserve.predictor()["latestCreatedRevision"] == REV2  # still there, with no traffic


def test_first_version_failing_has_nothing_to_roll_back_to(cluster, services):
    cluster.kserve.behave(REV1, "fails")
    with pytest.raises(RolloutFailed, match="nothing served before") as refused:
        roll_out(cluster, services, "1")
    assert refused.value.record["outcome"] == "refused"
    assert "canaryTrafficPercent" not in cluster.isvc()["spec"]["predictor"]  # created, never patched


def test_rollback_by_hand_then_deploying_the_same_version_again(cluster, services):
    roll_out(cluster, services, "1")
    roll_out(cluster, services, "2")
    back = rollout.roll_back(services, cluster.namespace, "simrec", **FAST)
    assert back["outcome"] == "rolled back" and (back["revision"], back["from_revision"]) == (REV1, REV2)
    assert cluster.kserve.traffic() == {REV1: 100}
    assert cluster.kserve.predictor()["latestRolledoutRevision"] == REV1
    again = rollout.roll_back(services, cluster.namespace, "simrec", **FAST)  # idempotent
    assert again["revision"] == REV1 and cluster.kserve.traffic() == {REV1: 100}

    # the pipeline deploys the same champion again: no new revision, no canary, it takes all traffic
    redeploy = roll_out(cluster, services, "2")
    assert redeploy["revision"] == REV2 and cluster.kserve.traffic() == {REV2: 100}
    assert "canaryTrafficPercent" not in cluster.isvc()["spec"]["predictor"]
    assert cluster.kserve.predictor()["latestCreatedRevision"] == REV2


def test_rollback_cannot_step_past_a_refused_revision(cluster, services):
    roll_out(cluster, services, "1")
    roll_out(cluster, services, "2")
    cluster.kserve.behave(REV3, "fails")
    with pytest.raises(RolloutFailed):
        roll_out(cluster, services, "3")
    with pytest.raises(InputError, match=f"latest revision {REV3} failed .* {REV2} serves"):
        rollout.roll_back(services, cluster.namespace, "simrec", **FAST)
    assert cluster.kserve.traffic() == {REV2: 100}


class KServeWritesAfterEachRead(InferenceServices):
    """The rollout's client, with KServe writing the status (a new resourceVersion) right after each read
    of an existing InferenceService: as it does whenever a revision or the traffic changes."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster, self.writes = cluster, 0

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        isvc = super().get(namespace, name)
        if isvc is not None and self.writes < 2:
            self.writes += 1
            path = f"{self.cluster.kserve.collection}/{name}/status"
            patch = {"status": {"url": f"http://simrec.example/{self.writes}"}}
            self.cluster.api.request("PATCH", path, patch, content_type="application/merge-patch+json")
        return isvc


def test_a_status_written_between_read_and_update_is_read_again(cluster, services):
    """A real server refuses an update with an older resourceVersion (409), and KServe's status writes
    make new ones; deploy reads again and retries instead of failing the rollout."""
    roll_out(cluster, services, "1")
    racing = KServeWritesAfterEachRead(cluster)
    second = roll_out(cluster, racing, "2")
    assert racing.writes == 2 and second["revision"] == REV2 and cluster.kserve.traffic() == {REV2: 100}


def test_rollback_with_nothing_before(cluster, services):
    with pytest.raises(InputError, match=f"no InferenceService {cluster.namespace}/simrec"):
        rollout.roll_back(services, cluster.namespace, "simrec", **FAST)
    roll_out(cluster, services, "1")
    with pytest.raises(InputError, match="nothing to roll back to"):
        rollout.roll_back(services, cluster.namespace, "simrec", **FAST)


def test_the_api_server_checks_what_deploy_sends(cluster, services):
    """What the stand-in accepted and a real server does not: a wrong type is refused by KServe's CRD
    schema, an update over an older resourceVersion is refused, and a field the CRD does not have is
    dropped (pruned), not stored."""
    wrong = cluster.manifest("1")
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(InputError, match=r"answered 422: .*minReplicas"):
        services.create(wrong)
    typo = cluster.manifest("1")
    typo["spec"]["predictor"]["containers"][0]["imagePullPolcy"] = "Always"
    services.create(typo)
    assert "imagePullPolcy" not in cluster.isvc()["spec"]["predictor"]["containers"][0]
    stale = cluster.manifest("2")
    stale["metadata"]["resourceVersion"] = "1"
    with pytest.raises(InputError, match="answered 409"):
        services.replace(stale)


def test_api_errors_are_one_clear_line(cluster, services):
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "another"
    cluster.kubeconfig.write_text(yaml.safe_dump(config))
    with pytest.raises(InputError, match="answered 401: Unauthorized"):
        roll_out(cluster, InferenceServices(), "1")


@pytest.mark.parametrize("cluster", ["patch", "get"], indirect=True)
def test_a_role_without_a_verb_deploy_uses_fails_the_rollout(cluster, services):
    """The chart's Role is what the rollout may do: without `patch` the canary step is refused, without
    `get` the first read; the message says which permission is missing."""
    verb = next(v for v in ("patch", "get") if v not in role_verbs(cluster))
    with pytest.raises(
        InputError, match=rf"answered 403: .*cannot {verb} resource .inferenceservices."
    ) as refused:
        roll_out(cluster, services, "1")
        roll_out(cluster, services, "2")
    assert f"system:serviceaccount:{cluster.namespace}:{cluster.account}" in str(refused.value)
    assert "the service account needs" in str(refused.value)


def role_verbs(cluster: Cluster) -> set[str]:
    role = cluster.api.get(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{cluster.namespace}/roles/simrec-deploy"
    )
    return {verb for rule in role["rules"] for verb in rule["verbs"]}


# -- the commands ------------------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "simrec", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_deploy_and_rollback_commands(cluster, tmp_path):
    """The commands the pipeline's deploy and rollback components run, as the chart's service account."""
    env = os.environ | {"PYTHONPATH": SRC}
    settings = {"namespace": cluster.namespace, "name": "simrec", "canary_percent": 25, **FAST}
    settings = json.dumps(settings)
    result = tmp_path / "result.json"

    def deploy_cli(version: str, *extra: str) -> subprocess.CompletedProcess:
        uri = f"s3://mlflow/1/models/m-{version}-ok/artifacts"
        flags = ["--storage-uri", uri, "--version", version, "--result-out", str(result), *extra]
        return run("deploy", "--kserve", settings, *flags, env=env)

    # the profile's vector engine, as the pipeline passes it: the predictor's URI and token Secret
    engine = {"uri": "http://milvus.milvus:19530", "alias": "simrec", "token_secret": "simrec-milvus"}
    for version in ("1", "2"):
        done = deploy_cli(version, "--vector-engine", json.dumps(engine))
        assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(result.read_text())
    assert answer["outcome"] == "serving" and answer["model"]["version"] == "2"
    (container,) = cluster.isvc()["spec"]["predictor"]["containers"]
    assert container["args"][-2:] == ["--vector-engine-uri", engine["uri"]]
    assert {
        "name": "SIMREC_VECTOR_ENGINE_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "simrec-milvus", "key": "token"}},
    } in container["env"]
    assert {REV1: 75, REV2: 25} in cluster.kserve.traffic_history

    back = run("rollback", "--kserve", settings, "--result-out", str(result), env=env)
    assert back.returncode == 0, back.stderr[-2000:]
    assert json.loads(result.read_text())["revision"] == REV1 and cluster.kserve.traffic() == {REV1: 100}

    seen = len(cluster.kserve.traffic_history)
    cluster.kserve.behave(REV3, "fails")
    refused = deploy_cli("3")
    assert refused.returncode != 0
    assert f"simrec deploy: error: {cluster.namespace}/simrec: revision {REV3} failed" in refused.stderr
    assert "Traceback" not in refused.stderr
    record = json.loads(result.read_text())  # why, recorded
    assert record["outcome"] == "refused" and record["rollback"]["serving"] == REV1
    # the version rolled back by hand (2) got no traffic while 3 was tried
    history = cluster.kserve.traffic_history[seen:]
    assert not [t for t in history if REV2 in t] and cluster.kserve.traffic() == {REV1: 100}

    wrong = run("deploy", "--kserve", settings, "--package", str(tmp_path), "--version", "1", env=env)
    assert wrong.returncode == 2 and "no --server or --package" in wrong.stderr


def test_the_manifest_in_docs_serving_is_what_the_code_renders() -> None:
    """docs/serving.md shows the full profile's InferenceService; it must not drift from the code."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    shown = yaml.safe_load(text.split("**The manifest**", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0])
    settings = load_config("full").serve.kserve.model_copy(update={"namespace": "kubeflow"})
    model = ServedModel("simrec", "3", "s3://simrec/mlflow/1/models/m-0123abcd/artifacts")
    assert shown == render_inference_service(kserve_settings.endpoint(settings), model, 10)
