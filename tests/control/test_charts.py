"""charts/: `helm lint` and `helm template` with the default and the example values; every rendered core
object valid against Kubernetes' own schema in strict mode (unknown fields refused); every rendered object,
the InferenceService and the Argo CD Application included, applied with server-side apply to a real
kube-apiserver holding KServe's and Argo CD's own CRDs (tests/kube_api.py), and `helm install` against it;
and the names, paths and ports the compiled pipeline and the serve image rely on. helm comes from
scripts/setup-helm (built from tools/helm)."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from helm_charts import (
    CHARTS,
    KUBERNETES_VERSION,
    NAMESPACE,
    ROOT,
    by_kind,
    helm_program,
    one,
    render,
    values_args,
)
from kube_api import ApiError, unique_namespace

from simrec.config import VectorEngineConfig, load_config
from simrec.kserve.manifest import ServedModel, cpu_threads, render_inference_service
from simrec.kserve.settings import endpoint as kserve_endpoint
from simrec.pipeline import definition
from simrec.records import ENGINE_TOKEN_KEY, ENGINE_TOKEN_VARIABLE
from simrec.serving.cli import build_parser as serve_parser

RENDERS = [
    ("simrec", None),
    ("simrec", "values-example.yaml"),
    ("simrec-serving", None),
    ("simrec-serving", "values-example.yaml"),
]
# Checked by the real API server against the projects' own CRDs (tests/crds), not offline.
CUSTOM_RESOURCES = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("argoproj.io/v1alpha1", "Application"),
}
APPLICATION = ROOT / "deploy" / "argocd" / "simrec-serving.yaml"
EXECUTOR_TEMPLATE_KEY = definition.POD_TEMPLATE_KEY  # the pipeline mounts it under this key
ENGINE = VectorEngineConfig(uri="http://milvus.milvus:19530", token_secret="simrec-milvus")
ENGINES = {  # evaluate.vector_engine as a profile may set it
    "off": None,
    "uri only": ENGINE.model_copy(update={"token_secret": None}),
    "uri and token": ENGINE,
}


def engine_values(engine: VectorEngineConfig | None) -> dict[str, Any]:
    """The chart's values for the engine deploy is given."""
    return {"vectorEngine": {"uri": engine.uri, "tokenSecret": engine.token_secret}} if engine else {}


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_program()


@pytest.fixture(scope="module")
def rendered(helm) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    return {(chart, values): render(helm, chart, values) for chart, values in RENDERS}


def pod_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A Pod with a workload's pod-level fields, for Kubernetes' own schema to check."""
    pod_fields = {
        "containers",
        "serviceAccountName",
        "nodeSelector",
        "tolerations",
        "volumes",
        "securityContext",
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {key: value for key, value in spec.items() if key in pod_fields},
    }


def validate(doc: dict[str, Any]) -> None:
    """Offline, against the newest supported Kubernetes' schema (strict): core objects, and the pod inside
    the InferenceService. Custom resources as a whole are the API server's to check (below)."""
    if (doc["apiVersion"], doc["kind"]) not in CUSTOM_RESOURCES:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    elif doc["kind"] == "InferenceService":
        predictor = doc["spec"]["predictor"]
        kubernetes_validate.validate(
            pod_of(predictor, doc["metadata"]["name"]), KUBERNETES_VERSION, strict=True
        )


@pytest.mark.parametrize(("chart", "values"), RENDERS)
def test_helm_lint_is_clean(helm, chart, values) -> None:
    command = [str(helm), "lint", "--strict", str(CHARTS / chart), "--namespace", NAMESPACE]
    result = subprocess.run(command + values_args(chart, values), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("chart", "values"), RENDERS)
def test_every_rendered_object_is_valid(rendered, chart, values) -> None:
    docs = rendered[(chart, values)]
    assert docs
    for doc in docs:
        validate(doc)
        if doc["kind"] == "ConfigMap" and EXECUTOR_TEMPLATE_KEY in doc["data"]:
            # Spark reads this pod as written: it must be a valid Pod too
            kubernetes_validate.validate(
                yaml.safe_load(doc["data"][EXECUTOR_TEMPLATE_KEY]), KUBERNETES_VERSION, True
            )


def test_the_offline_validator_refuses_what_a_cluster_would(rendered) -> None:
    """The check above can fail: an unknown field in a core object, or a bad container inside the
    InferenceService, are each refused."""
    deployment = copy.deepcopy(one(rendered[("simrec", None)], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    bad_container = copy.deepcopy(
        one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService")
    )
    bad_container["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "http"
    for broken in (deployment, bad_container):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


# -- on a real API server --------------------------------------------------------------------------------


def install_namespace(kube, prefix: str) -> str:
    namespace = unique_namespace(prefix)
    kube.create_namespace(namespace)
    return namespace


@pytest.mark.parametrize(("chart", "values"), RENDERS)
def test_every_rendered_object_applies_to_the_api_server(kube, helm, chart, values) -> None:
    """What `helm template` renders, applied as `kubectl apply --server-side` would into the namespace the
    chart is installed in: the server's schemas (KServe's own CRD for the InferenceService) refuse unknown
    fields and wrong types, and the objects are stored as rendered."""
    namespace = install_namespace(kube, chart)
    docs = render(helm, chart, values, namespace=namespace)
    assert docs
    for doc in docs:
        stored = kube.apply(doc, namespace)
        assert stored["metadata"]["namespace"] == namespace
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            assert stored["spec"] == doc["spec"]  # nothing pruned or defaulted away


def test_the_api_server_refuses_a_wrong_field_in_a_rendered_object(kube, rendered) -> None:
    """The test above can fail: a misspelt field in a Deployment's container, in the InferenceService's
    predictor or in its container, a wrong type, and a misspelt field in the Argo CD Application are
    each refused by the server (strict field validation, the CRDs' structural schemas)."""
    namespace = install_namespace(kube, "broken")
    deployment = copy.deepcopy(one(rendered[("simrec", None)], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    isvc = one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService")
    typo, wrong_type, container_typo = (copy.deepcopy(isvc) for _ in range(3))
    typo["spec"]["predictor"]["canaryTraficPercent"] = 10
    wrong_type["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    container_typo["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    application = yaml.safe_load(APPLICATION.read_text())
    application["spec"]["syncPolicy"]["automatd"] = {}
    del application["metadata"]["namespace"]  # into this test's namespace
    cases = [
        (deployment, "imagePullPolcy"),
        (typo, "canaryTraficPercent"),
        (wrong_type, "canaryTrafficPercent"),
        (container_typo, "readinesProbe"),
        (application, "automatd"),
    ]
    for broken, field in cases:
        with pytest.raises(ApiError, match=field) as refused:
            kube.apply(broken, namespace)
        # (Kubernetes 1.29 answers an unknown field in a server-side apply with 500 "failed to create
        # typed patch object ... field not declared in schema"; later releases with 4xx)
        assert refused.value.status in (400, 422, 500)


def test_the_argocd_application_applies_to_the_api_server(kube) -> None:
    """deploy/argocd/simrec-serving.yaml as `kubectl apply -n argocd` puts it, checked against Argo CD's own
    Application CRD."""
    application = yaml.safe_load(APPLICATION.read_text())
    namespace = application["metadata"]["namespace"]
    with contextlib.suppress(ApiError):  # made by an earlier test on the same server
        kube.create_namespace(namespace)
    stored = kube.apply(application, namespace)
    assert stored["spec"] == application["spec"]


@pytest.mark.parametrize(
    ("chart", "values"), [("simrec", "values-example.yaml"), ("simrec-serving", "values-example.yaml")]
)
def test_helm_installs_the_chart_on_the_api_server(kube, helm, tmp_path, chart, values) -> None:
    """`helm install` as docs/cluster.md says, against the test server: helm checks the objects against the
    server's OpenAPI and creates them (nothing runs them: no pods become ready, so no --wait)."""
    namespace = install_namespace(kube, chart)
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump(kube.kubeconfig()))
    command = [
        str(helm),
        "install",
        chart,
        str(CHARTS / chart),
        "--namespace",
        namespace,
        "--kubeconfig",
        str(config),
    ]
    result = subprocess.run(command + values_args(chart, values), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = render(helm, chart, values, namespace=namespace)
    for doc in expected:
        stored = kube.get(kube.path(doc, namespace))
        assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            # helm creates without strict field validation: the server would drop an unknown field silently
            assert stored["spec"] == doc["spec"]


def test_the_argocd_application_is_valid_and_points_at_the_serving_chart(rendered) -> None:
    application = yaml.safe_load(APPLICATION.read_text())
    source = application["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    assert application["spec"]["destination"]["namespace"] == NAMESPACE
    # what Argo CD leaves to the pipeline is the InferenceService this chart renders
    isvc = one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService")
    (ignored,) = application["spec"]["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"], ignored["name"]) == (
        "serving.kserve.io",
        "InferenceService",
        isvc["metadata"]["name"],
    )
    assert "RespectIgnoreDifferences=true" in application["spec"]["syncPolicy"]["syncOptions"]


def test_the_application_values_render(helm, tmp_path) -> None:
    application = yaml.safe_load((ROOT / "deploy" / "argocd" / "simrec-serving.yaml").read_text())
    values = tmp_path / "application-values.yaml"
    values.write_text(yaml.safe_dump(application["spec"]["source"]["helm"]["valuesObject"]))
    docs = render(helm, "simrec-serving", str(values))  # an absolute path stays itself under CHARTS
    for doc in docs:
        validate(doc)
    assert by_kind(docs, "InferenceService")


def test_secrets_and_claims_are_the_ones_the_pipeline_uses(rendered) -> None:
    full = load_config("full", environ={})
    docs = rendered[("simrec", "values-example.yaml")]
    secrets = {
        doc["metadata"]["name"]: set(doc["stringData"])
        for doc in by_kind(docs, "Secret")
        if "stringData" in doc
    }
    assert secrets[definition.OBJECT_STORE_SECRET] == set(definition.OBJECT_STORE_KEYS)
    assert secrets[definition.MLFLOW_SECRET] == set(definition.MLFLOW_KEYS)
    claims = {
        doc["metadata"]["name"]: doc["spec"]["accessModes"] for doc in by_kind(docs, "PersistentVolumeClaim")
    }
    assert claims[full.train.checkpoint_pvc] == ["ReadWriteOnce"]
    assert ["ReadWriteMany"] in claims.values()  # the executors' shared checkpoints (multi-node)
    # With no credentials in the values, no Secret holding them is made: they are expected to exist.
    defaults = rendered[("simrec", None)]
    made = {doc["metadata"]["name"] for doc in by_kind(defaults, "Secret")}
    assert not made & {definition.OBJECT_STORE_SECRET, definition.MLFLOW_SECRET}


def test_mlflow_is_where_the_pipeline_looks_and_serves_artifacts(rendered) -> None:
    tracking = urlparse(load_config("full", environ={}).storage.mlflow_tracking_uri)
    for values in (None, "values-example.yaml"):
        docs = rendered[("simrec", values)]
        service = one(docs, "Service", "mlflow")
        # the Service's short name: resolved in the namespace the pipeline's pods run in (kubeflow for
        # standalone KFP, the profile's namespace for multi-user Kubeflow), where this chart is installed
        assert service["metadata"]["name"] == tracking.hostname
        assert service["spec"]["ports"][0]["port"] == tracking.port
        container = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert "--serve-artifacts" in args
        assert any(arg.startswith("--artifacts-destination=s3://") for arg in args)
        (hosts,) = [
            arg.removeprefix("--allowed-hosts=").split(",")
            for arg in args
            if arg.startswith("--allowed-hosts=")
        ]
        assert f"{tracking.hostname}:*" in hosts  # else MLflow answers the pipeline's requests with 403
        env = {item["name"]: item for item in container["env"]}
        assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]  # never in the pod spec
        assert (
            env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == definition.MLFLOW_SECRET
        )
        assert "--app-name=basic-auth" in args
    example = rendered[("simrec", "values-example.yaml")]
    args = one(example, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allowed-hosts=" in " ".join(args) and "mlflow.ml.example.com" in " ".join(args)


def test_the_inference_service_runs_the_serve_image_as_kserve_expects(rendered) -> None:
    isvc = one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    # the InferenceService conf/full's deploy step updates
    kserve = load_config("full", environ={}).serve.kserve
    assert kserve is not None
    # no namespace in the IR: deploy serves in the namespace its pod runs in, where the chart is installed
    assert isvc["metadata"]["name"] == kserve.name and kserve.namespace is None
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "registry.example.com/simrec/serve:0.1.0"
    env = {item["name"]: item for item in container["env"]}
    assert env["STORAGE_URI"]["value"].startswith("s3://")
    assert env["SIMREC_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "simrec-serve", "key": "token"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert [port["containerPort"] for port in container["ports"]] == [8080]
    # the arguments are the serve command's, and the package path is the one the serve image's CMD names
    assert container["args"][0] == "serve"
    args = serve_parser().parse_args(container["args"][1:])
    assert (args.port, args.model_name, args.version) == (8080, "simrec", "7")
    dockerfile = (ROOT / "images" / "serve" / "Dockerfile").read_text()
    (cmd,) = [
        json.loads(line.removeprefix("CMD ")) for line in dockerfile.splitlines() if line.startswith("CMD ")
    ]
    assert cmd[cmd.index("--package") + 1] == args.package
    # runAsNonRoot needs a numeric user: the one the image creates
    (uid,) = re.findall(r"useradd .*--uid (\d+)", dockerfile)
    assert container["securityContext"]["runAsUser"] == int(uid)
    # KServe's storage initializer reads the model with the object store's Secret, through this account
    account = one(rendered[("simrec-serving", "values-example.yaml")], "ServiceAccount")
    assert account["metadata"]["name"] == predictor["serviceAccountName"]
    assert account["secrets"] == [{"name": definition.OBJECT_STORE_SECRET}]


@pytest.mark.parametrize("engine", ENGINES.values(), ids=ENGINES.keys())
def test_the_chart_installs_the_predictor_the_deploy_step_applies(helm, tmp_path, engine) -> None:
    """The chart bootstraps the endpoint and the pipeline's deploy step replaces its spec for each new
    version: both must render the same predictor, or a rollout would silently change (or drop) settings.
    With a vector engine, the chart's vectorEngine values are what the profile's evaluate.vector_engine
    gives deploy."""
    kserve = load_config("full", environ={}).serve.kserve
    assert kserve is not None and kserve.max_replicas is not None
    model = ServedModel(name="simrec", version="7", storage_uri="s3://simrec/mlflow/1/models/m-7/artifacts")
    resources = kserve.resources
    values = {
        "model": {"name": model.name, "storageUri": model.storage_uri, "version": model.version},
        "minReplicas": kserve.min_replicas,
        "maxReplicas": kserve.max_replicas,
        "serviceAccount": {"name": kserve.service_account},
        "resources": {
            "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request},
            "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit},
        },
    } | engine_values(engine)
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    chart = one(render(helm, "simrec-serving", tmp_path / "values.yaml"), "InferenceService")
    deployed = render_inference_service(
        kserve_endpoint(kserve.model_copy(update={"namespace": NAMESPACE}), engine), model
    )
    assert chart["spec"] == deployed["spec"]
    assert chart["metadata"]["name"] == deployed["metadata"]["name"]
    assert chart["metadata"]["annotations"] == deployed["metadata"]["annotations"]


def test_the_predictor_reaches_the_vector_engine_the_values_name(rendered, helm) -> None:
    """vectorEngine.uri becomes simrec serve's --vector-engine-uri and vectorEngine.tokenSecret the engine's
    token variable from that Secret's key `token` (the key evaluate reads); unset, neither is there."""

    def container(*sets: str) -> dict[str, Any]:
        isvc = one(render(helm, "simrec-serving", "values-example.yaml", *sets), "InferenceService")
        validate(isvc)
        (served,) = isvc["spec"]["predictor"]["containers"]
        return served

    example = one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService")
    (default,) = example["spec"]["predictor"]["containers"]
    assert "--vector-engine-uri" not in default["args"]
    assert ENGINE_TOKEN_VARIABLE not in {item["name"] for item in default["env"]}
    uri = f"vectorEngine.uri={ENGINE.uri}"
    both = container(uri, f"vectorEngine.tokenSecret={ENGINE.token_secret}")
    assert serve_parser().parse_args(both["args"][1:]).vector_engine_uri == ENGINE.uri
    token = {item["name"]: item for item in both["env"]}[ENGINE_TOKEN_VARIABLE]
    assert token["valueFrom"] == {"secretKeyRef": {"name": ENGINE.token_secret, "key": ENGINE_TOKEN_KEY}}
    uri_only = container(uri)
    assert serve_parser().parse_args(uri_only["args"][1:]).vector_engine_uri == ENGINE.uri
    assert ENGINE_TOKEN_VARIABLE not in {item["name"] for item in uri_only["env"]}
    assert container("vectorEngine=null")["args"] == default["args"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["vectorEngine.tokenSecret=simrec-milvus"], "vectorEngine.tokenSecret needs vectorEngine.uri"),
        (["vectorEngine.uri=http://user:secret@milvus:19530"], "vectorEngine.uri carries credentials"),
        (["vectorEngine.uri=milvus 19530"], 'vectorEngine.uri "milvus 19530": no spaces'),
        (
            ["vectorEngine.uri=http://milvus:19530", "vectorEngine.tokenSecret=Simrec_Milvus"],
            'vectorEngine.tokenSecret "Simrec_Milvus" is not a Secret name',
        ),
    ],
)
def test_bad_vector_engine_values_are_refused_by_name(helm, sets, message) -> None:
    """Refused as the profile's evaluate.vector_engine is (simrec.config), with or without a model."""
    for model in ([], ["model.storageUri=s3://b/m"]):
        command = [str(helm), "template", "simrec-serving", str(CHARTS / "simrec-serving")]
        for assignment in sets + model:
            command += ["--set", assignment]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_no_model_no_inference_service_and_no_canary_unless_asked(rendered, helm) -> None:
    assert not by_kind(rendered[("simrec-serving", None)], "InferenceService")
    isvc = one(render(helm, "simrec-serving", None, "model.storageUri=s3://b/m"), "InferenceService")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    rollback = one(
        render(helm, "simrec-serving", None, "model.storageUri=s3://b/m", "canaryTrafficPercent=0"),
        "InferenceService",
    )
    assert rollback["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_the_pipelines_account_may_roll_out_the_inference_service(rendered) -> None:
    """Finding 5: KFP's pipeline-runner Role has no serving.kserve.io rules; the chart grants what deploy does
    (simrec.kserve.rollout: get, create, replace, patch) to the account of each install mode."""
    for values, account in ((None, "pipeline-runner"), ("values-example.yaml", "default-editor")):
        docs = rendered[("simrec", values)]
        role = one(docs, "Role", "simrec-deploy")
        (rule,) = role["rules"]
        assert rule["apiGroups"] == ["serving.kserve.io"] and rule["resources"] == ["inferenceservices"]
        assert {"get", "create", "update", "patch"} <= set(rule["verbs"])
        binding = one(docs, "RoleBinding", "simrec-deploy")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    spark = one(rendered[("simrec", "values-example.yaml")], "RoleBinding", "simrec-spark-driver")
    assert spark["subjects"][0]["name"] == "default-editor"  # the same account drives the executors


def test_the_served_container_takes_no_env_from_the_downward_api(rendered) -> None:
    """Finding 6: Knative refuses fieldRef/resourceFieldRef env unless kubernetes.podspec-fieldref is on
    (knative/serving pkg/apis/serving/fieldmask.go, 1.12-1.16; off by default and in Kubeflow 1.10)."""
    kserve = load_config("full", environ={}).serve.kserve
    assert kserve is not None
    # with the vector engine's token, which is a secretKeyRef: allowed (EnvVarSourceMask, same file)
    endpoint = kserve_endpoint(kserve.model_copy(update={"namespace": NAMESPACE}), ENGINE)
    model = ServedModel(name="simrec", version="7", storage_uri="s3://simrec/mlflow/1/models/m-7/artifacts")
    rendered_by_deploy = render_inference_service(endpoint, model)
    for isvc in (
        rendered_by_deploy,
        one(rendered[("simrec-serving", "values-example.yaml")], "InferenceService"),
    ):
        (container,) = isvc["spec"]["predictor"]["containers"]
        for env in container["env"]:
            assert not {"fieldRef", "resourceFieldRef"} & set(env.get("valueFrom", {})), env
        threads = {e["name"]: e for e in container["env"]}["SIMREC_MODEL_THREADS"]
        cpu_limit = str(container["resources"]["limits"]["cpu"])
        assert threads["value"] == str(cpu_threads(cpu_limit))  # the CPU limit, as a literal


def test_the_executor_template_complements_the_pipelines_spark_conf(rendered) -> None:
    """Multi-node training: the executor pod template adds what spark_conf() cannot say and repeats none of
    its volumes (a volume named twice makes Spark's executor pods invalid)."""
    assert not by_kind(rendered[("simrec", None)], "ConfigMap")  # single-node stays the default
    docs = rendered[("simrec", "values-example.yaml")]
    template = yaml.safe_load(
        one(docs, "ConfigMap", "simrec-spark-executor-template")["data"][EXECUTOR_TEMPLATE_KEY]
    )
    full = load_config(
        "full",
        environ={
            "SIMREC__SPARK__MASTER": "k8s://https://kubernetes.default.svc",
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_IMAGE": "registry.example.com/simrec/steps-gpu:0.1.0",
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_INSTANCES": "3",  # the example: 3 nodes, 1 GPU each
            "SIMREC__TRAIN__WORKERS": "3",
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_GPUS": "1",
            "SIMREC__SPARK__KUBERNETES__CHECKPOINT_PVC": "simrec-checkpoints-rwx",
        },
    )
    conf = definition.spark_conf(full)
    (container,) = template["spec"]["containers"]
    assert container["image"] == conf["spark.kubernetes.container.image"]
    accelerator = full.train.accelerator
    assert accelerator.startswith(conf["spark.executor.resource.gpu.vendor"] + "/")
    assert str(container["resources"]["limits"][accelerator]) == conf["spark.executor.resource.gpu.amount"]
    assert {t["key"] for t in template["spec"]["tolerations"]} == {accelerator}
    conf_volumes = {key.split(".")[5] for key in conf if key.startswith("spark.kubernetes.executor.volumes.")}
    assert conf_volumes and not conf_volumes & {volume["name"] for volume in template["spec"]["volumes"]}
    claims = {doc["metadata"]["name"]: doc for doc in by_kind(docs, "PersistentVolumeClaim")}
    volume = "spark.kubernetes.executor.volumes.persistentVolumeClaim.checkpoints"
    assert claims[conf[f"{volume}.options.claimName"]]["spec"]["accessModes"] == ["ReadWriteMany"]
    binding = one(docs, "RoleBinding", "simrec-spark-driver")
    assert binding["subjects"][0]["namespace"] == NAMESPACE
