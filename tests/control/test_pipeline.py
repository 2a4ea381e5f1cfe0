"""The product's component YAML and compiled pipeline (IR), checked as a CI would without a cluster."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from control_helpers import CHECKOUT, simrec
from kfp import components

import simrec as package
from simrec.config import load_config
from simrec.kserve import settings as kserve_settings
from simrec.kserve.manifest import ServedModel, render_inference_service
from simrec.pipeline import definition
from simrec.pipeline.definition import STEPS, compile_pipeline
from simrec.pipeline.docs import render

COMPONENT_FILES = sorted((CHECKOUT / "components").glob("*/component.yaml"))


def _placeholder_names(node, found: set[tuple[str, str]]) -> set[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("inputValue", "inputPath", "outputPath", "isPresent"):
                found.add((key, value))
            else:
                _placeholder_names(value, found)
    elif isinstance(node, list):
        for item in node:
            _placeholder_names(item, found)
    return found


def test_every_step_has_a_component() -> None:
    assert sorted(p.parent.name for p in COMPONENT_FILES) == sorted(STEPS)


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.parent.name)
def test_component_yaml_is_a_valid_contract(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    components.load_component_from_file(str(path))
    inputs = {i["name"] for i in spec.get("inputs", [])}
    outputs = {o["name"] for o in spec.get("outputs", [])}
    container = spec["implementation"]["container"]
    for kind, name in _placeholder_names(container, set()):
        declared = outputs if kind == "outputPath" else inputs
        assert name in declared, f"{path}: {kind} {name!r} is not declared"
    repository, tag = container["image"].rsplit(":", 1)
    assert tag == package.__version__, f"{path}: image tag {tag} != package version {package.__version__}"
    assert (CHECKOUT / "images" / repository.rsplit("/", 1)[-1] / "requirements.txt").exists()


def test_compiled_ir_for_the_cluster(tmp_path) -> None:
    config = load_config("full")
    documents = list(yaml.safe_load_all(compile_pipeline(config, tmp_path / "p.yaml").read_text()))
    spec, platform = documents
    executor = spec["deploymentSpec"]["executors"]["exec-ingest"]["container"]
    assert executor["image"] == f"simrec/steps:{package.__version__}"
    assert executor["command"] == ["simrec", "ingest"]
    assert "{{$.outputs.parameters['lineage'].output_file}}" in executor["args"]
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["lake_uri"]["defaultValue"] == config.storage.lake_uri == "s3a://simrec/lake"
    assert parameters["source"]["defaultValue"] == config.ingest.source
    assert spec["root"]["dag"]["tasks"]["ingest"]["cachingOptions"] == {}  # caching off: ingest always runs
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert kubernetes["exec-ingest"]["secretAsEnv"][0]["secretName"] == "simrec-object-store"

    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == config.train.image == f"simrec/steps-gpu:{package.__version__}"  # CUDA build
    assert {"name": "MLFLOW_TRACKING_URI", "value": config.storage.mlflow_tracking_uri} in train["env"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    # a whole number fixed at compile time: KFP's driver requests no GPU for a parameter placeholder
    assert train["resources"]["accelerator"]["resourceCount"] == str(config.train.workers) == "4"
    assert int(train["resources"]["accelerator"]["count"]) == 4
    assert kubernetes["exec-train"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert kubernetes["exec-train"]["pvcMount"][0]["mountPath"] == config.storage.checkpoint_root
    assert (
        kubernetes["exec-train"]["pvcMount"][0]["constant"]
        == config.train.checkpoint_pvc
        == "simrec-checkpoints"
    )
    assert {"name": "SIMREC_SPARK_PACKAGES", "value": "org.apache.hadoop:hadoop-aws:3.3.4"} in train["env"]
    assert {s["secretName"] for s in kubernetes["exec-train"]["secretAsEnv"]} == {
        "simrec-object-store",
        "simrec-mlflow",
    }
    train_task = spec["root"]["dag"]["tasks"]["train"]
    assert train_task["cachingOptions"] == {"enableCache": True}
    assert train_task["retryPolicy"]["maxRetryCount"] == 2
    assert train_task["inputs"]["parameters"]["lineage"]["taskOutputParameter"]["producerTask"] == "ingest"
    assert "workers" not in parameters  # the GPUs the pod requests: not a run choice
    assert train_task["inputs"]["parameters"]["workers"] == {"runtimeValue": {"constant": 4}}

    tune = spec["deploymentSpec"]["executors"]["exec-tune"]["container"]
    assert tune["command"] == ["simrec", "tune"]
    assert spec["root"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]["search_space"] == {
        "componentInputParameter": "search_space"
    }
    assert parameters["search_space"]["defaultValue"] == config.tune.space
    assert parameters["max_evals"]["defaultValue"] == config.tune.max_evals == 64
    best = spec["root"]["dag"]["tasks"]["train"]["inputs"]["artifacts"]["best_params"]["taskOutputArtifact"]
    assert best == {"producerTask": "tune", "outputArtifactKey": "best_params"}

    evaluate = spec["deploymentSpec"]["executors"]["exec-evaluate"]["container"]
    assert evaluate["command"] == ["simrec", "evaluate"] and evaluate["args"][-1] == "{{$}}"
    evaluate_task = spec["root"]["dag"]["tasks"]["evaluate"]
    assert evaluate_task["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "train"
    outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]
    assert outputs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    assert outputs["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["parameters"]["blessed"]["parameterType"] == "BOOLEAN"
    assert parameters["min_recall_at_1"]["defaultValue"] == config.evaluate.min_recall_at_1 == 0.9
    validate = spec["deploymentSpec"]["executors"]["exec-validate"]["container"]
    assert validate["image"] == f"simrec/serve:{package.__version__}"  # the serving environment
    register = spec["root"]["dag"]["tasks"]["register"]
    assert register["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "validate"
    assert register["cachingOptions"] == {}  # idempotent, and run every time
    # the run's identity from the pod's Argo label (no KFP placeholder gives it on 2.4.1)
    assert kubernetes["exec-register"]["fieldPathAsEnv"] == [
        {"fieldPath": "metadata.labels['workflows.argoproj.io/workflow']", "name": "SIMREC_PIPELINE_RUN"}
    ]
    for task in ("train", "evaluate"):  # one pipeline parameter: evaluate measures what train left out
        wiring = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]["exclude_classes"]
        assert wiring == {"componentInputParameter": "exclude_classes"}


def _ir(config, tmp_path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(compile_pipeline(config, tmp_path / "p.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_full_profile_is_single_node_multi_gpu_and_cacheable_on_kfp(tmp_path) -> None:
    """The acceptance test of the cluster shape, read from the compiled IR the KFP UI uploads."""
    config = load_config("full")
    spec, kubernetes = _ir(config, tmp_path)
    executors, tasks = spec["deploymentSpec"]["executors"], spec["root"]["dag"]["tasks"]
    train, train_task = executors["exec-train"]["container"], tasks["train"]
    # the GPUs the pod requests are the ranks it starts: both are the compile-time train.workers
    gpus = train["resources"]["accelerator"]
    assert (gpus["resourceType"], gpus["resourceCount"], int(gpus["count"])) == ("nvidia.com/gpu", "4", 4)
    assert train_task["inputs"]["parameters"]["workers"] == {
        "runtimeValue": {"constant": config.train.workers}
    }
    ranks = train["args"][train["args"].index("--workers") + 1]
    assert ranks == "{{$.inputs.parameters['workers']}}"
    # NCCL's shared memory: an in-memory /dev/shm of train.shared_memory
    assert kubernetes["exec-train"]["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "shared-memory"}
    ]
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env["SIMREC_SPARK_MASTER"].startswith("local")  # the ranks run inside the pod
    assert "SIMREC_SPARK_CONF" not in env
    # the checkpoints go to the claim
    (mount,) = kubernetes["exec-train"]["pvcMount"]
    checkpoints = train_task["inputs"]["parameters"]["checkpoint_root"]["runtimeValue"]["constant"]
    assert checkpoints == mount["mountPath"] and mount["constant"] == "simrec-checkpoints"
    for name, executor in executors.items():
        resources = executor["container"]["resources"]
        step = name.removeprefix("exec-")
        expected = config.task_resources(step)
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"]) == (
            expected.cpu_request,
            expected.cpu_limit,
        ), name
        assert (resources["resourceMemoryRequest"], resources["resourceMemoryLimit"]) == (
            expected.memory_request,
            expected.memory_limit,
        ), name
        # loopback is for one machine: on a cluster executors and rendezvous need the pod's address
        assert "SPARK_LOCAL_IP" not in {e["name"] for e in executor["container"].get("env", [])}, name
    assert config.task_resources("train").cpu_limit != config.task_resources("default").cpu_limit
    # data identity reaches every reader as a parameter (KFP caches on values), never as an artifact
    for step in ("tune", "train", "evaluate"):
        inputs = tasks[step]["inputs"]
        assert inputs["parameters"]["lineage"] == {
            "taskOutputParameter": {"producerTask": "ingest", "outputParameterKey": "lineage"}
        }, step
        producers = {w["taskOutputArtifact"]["producerTask"] for w in inputs.get("artifacts", {}).values()}
        assert "ingest" not in producers, step
    assert spec["components"]["comp-ingest"]["outputDefinitions"] == {
        "parameters": {"lineage": {"parameterType": "STRUCT"}}
    }


def test_an_edited_train_default_reaches_tune_trials_and_the_run_parameters(tmp_path) -> None:
    """The train component YAML is the one place a training default is edited (README: Components)."""
    edited = tmp_path / "components"
    shutil.copytree(CHECKOUT / "components", edited)
    train_yaml = edited / "train" / "component.yaml"
    spec = yaml.safe_load(train_yaml.read_text())
    defaults = {i["name"]: i for i in spec["inputs"]}
    defaults["dropout"]["default"], defaults["epochs"]["default"] = 0.25, 3
    defaults["validation_fraction"]["default"] = 0.15
    train_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    ir, _ = yaml.safe_load_all(
        compile_pipeline(load_config("embedded"), tmp_path / "p.yaml", edited).read_text()
    )
    tune = ir["root"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]
    trials_start_from = tune["train_params"]["runtimeValue"]["constant"]
    assert trials_start_from["dropout"] == 0.25
    assert tune["validation_fraction"]["runtimeValue"]["constant"] == 0.15
    assert ir["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"] == 3
    train_inputs = ir["components"]["comp-train"]["inputDefinitions"]["parameters"]
    assert (train_inputs["dropout"]["defaultValue"], train_inputs["validation_fraction"]["defaultValue"]) == (
        0.25,
        0.15,
    )


def test_a_profile_chooses_the_index_and_the_component_keeps_the_other_defaults(tmp_path) -> None:
    environ = {"SIMREC__EVALUATE__INDEX__KIND": "ivfpq", "SIMREC__EVALUATE__INDEX__NPROBE": "32"}
    ir, _ = yaml.safe_load_all(
        compile_pipeline(load_config("embedded", environ=environ), tmp_path / "p.yaml").read_text()
    )
    evaluate = ir["root"]["dag"]["tasks"]["evaluate"]["inputs"]["parameters"]
    chosen = {
        name: value["runtimeValue"]["constant"] for name, value in evaluate.items() if "runtimeValue" in value
    }
    component = yaml.safe_load((CHECKOUT / "components" / "evaluate" / "component.yaml").read_text())
    defaults = {i["name"]: i["default"] for i in component["inputs"] if i["name"].startswith("index_")}
    assert (chosen["index_kind"], chosen["index_nprobe"]) == ("ivfpq", 32)
    assert chosen["index_pq_m"] == defaults["index_pq_m"] and chosen["index_m"] == defaults["index_m"]
    assert load_config("embedded").evaluate.index.kind == "hnsw"  # conf/base


def test_a_profile_turns_the_vector_engine_on_for_evaluate_and_the_kserve_predictor(tmp_path) -> None:
    def tasks(profile: str, environ: dict[str, str]) -> tuple[dict, dict, dict]:
        """evaluate's and deploy's constant inputs, and evaluate's Kubernetes settings."""
        spec, kubernetes = _ir(load_config(profile, environ=environ), tmp_path / f"{profile}{len(environ)}")

        def constants(task: str) -> dict:
            parameters = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
            return {k: v["runtimeValue"]["constant"] for k, v in parameters.items() if "runtimeValue" in v}

        return constants("evaluate"), constants("deploy"), kubernetes["exec-evaluate"]

    off, deploy, executor = tasks("full", {})  # every shipped profile: the component's defaults, engine off
    assert (off["vector_engine_uri"], off["vector_engine_alias"]) == ("", "simrec")
    assert {s["secretName"] for s in executor["secretAsEnv"]} == {"simrec-object-store", "simrec-mlflow"}
    assert deploy["vector_engine"] == {}

    engine = {
        "SIMREC__EVALUATE__VECTOR_ENGINE__URI": "http://milvus.milvus:19530",
        "SIMREC__EVALUATE__VECTOR_ENGINE__ALIAS": "catalogue",
        "SIMREC__EVALUATE__VECTOR_ENGINE__TOKEN_SECRET": "simrec-milvus",
    }
    on, deploy, executor = tasks("full", engine)
    assert (on["vector_engine_uri"], on["vector_engine_alias"]) == ("http://milvus.milvus:19530", "catalogue")
    token = next(s for s in executor["secretAsEnv"] if s["secretName"] == "simrec-milvus")
    assert token["keyToEnv"] == [{"secretKey": "token", "envVar": "SIMREC_VECTOR_ENGINE_TOKEN"}]
    # deploy renders the predictor from the same settings: the engine's URI, and the token from the same
    # Secret and key as evaluate's (tests/control/test_kserve_vector_engine.py)
    settings = kserve_settings.vector_engine_from_json(json.dumps(deploy["vector_engine"]))
    assert (settings.uri, settings.token_secret) == ("http://milvus.milvus:19530", token["secretName"])
    isvc = render_inference_service(
        kserve_settings.endpoint(
            load_config("full").serve.kserve.model_copy(update={"namespace": "x"}), settings
        ),
        ServedModel("simrec", "1", "s3://b/m"),
    )
    (container,) = isvc["spec"]["predictor"]["containers"]
    (predictor_token,) = [e for e in container["env"] if e["name"] == "SIMREC_VECTOR_ENGINE_TOKEN"]
    assert predictor_token["valueFrom"]["secretKeyRef"] == {
        "name": token["secretName"],
        "key": token["keyToEnv"][0]["secretKey"],
    }
    # no KServe (embedded): a local server takes the URI each package records; deploy is given no engine
    _, deploy, _ = tasks("embedded", engine)
    assert deploy["vector_engine"] == {}


def test_multi_node_shape_puts_gpus_and_checkpoints_on_the_executors(tmp_path) -> None:
    environ = {
        "SIMREC__SPARK__MASTER": "k8s://https://kubernetes.default.svc",
        "SIMREC__SPARK__KUBERNETES__EXECUTOR_IMAGE": "registry.local/simrec/steps:0.1.0",
        "SIMREC__SPARK__KUBERNETES__EXECUTOR_INSTANCES": "4",
        "SIMREC__SPARK__KUBERNETES__EXECUTOR_GPUS": "1",
        "SIMREC__SPARK__KUBERNETES__CHECKPOINT_PVC": "simrec-checkpoints-rwx",
        "SIMREC__SPARK__KUBERNETES__POD_TEMPLATE_CONFIG_MAP": "simrec-spark-executor-template",
    }
    config = load_config("full", environ=environ)
    spec, kubernetes = _ir(config, tmp_path)
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert "accelerator" not in train["resources"]  # the driver pod needs no GPU: the executors have them
    conf = json.loads({e["name"]: e["value"] for e in train["env"]}["SIMREC_SPARK_CONF"])
    assert conf["spark.kubernetes.container.image"] == "registry.local/simrec/steps:0.1.0"
    assert (conf["spark.executor.instances"], conf["spark.executor.resource.gpu.amount"]) == ("4", "1")
    volume = "spark.kubernetes.executor.volumes.persistentVolumeClaim.checkpoints"
    assert conf[f"{volume}.mount.path"] == kubernetes["exec-train"]["pvcMount"][0]["mountPath"]
    assert conf[f"{volume}.options.claimName"] == "simrec-checkpoints-rwx"
    # the chart's executor pod template (toleration, credentials, shared memory) reaches Spark
    (template,) = kubernetes["exec-train"]["configMapAsVolume"]
    assert template["configMapName"] == "simrec-spark-executor-template"
    assert conf["spark.kubernetes.executor.podTemplateFile"] == (
        f"{template['mountPath']}/{definition.POD_TEMPLATE_KEY}"
    )
    # the driver pod's address, and its namespace and name: executors are made there and owned by it
    assert kubernetes["exec-train"]["fieldPathAsEnv"] == [
        {"name": "SIMREC_POD_IP", "fieldPath": "status.podIP"},
        {"name": "SIMREC_POD_NAME", "fieldPath": "metadata.name"},
        {"name": "SIMREC_POD_NAMESPACE", "fieldPath": "metadata.namespace"},
    ]


def test_embedded_profile_has_no_gpu_settings(tmp_path) -> None:
    spec, _ = yaml.safe_load_all(compile_pipeline(load_config("embedded"), tmp_path / "p.yaml").read_text())
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]


def test_compile_command_writes_the_ir(tmp_path) -> None:
    result = simrec("compile", "--profile", "full", "--output", str(tmp_path / "ir.yaml"))
    assert result.returncode == 0, result.stderr
    assert "pipelineInfo" in (tmp_path / "ir.yaml").read_text()


def test_broken_component_yaml_is_reported(tmp_path) -> None:
    broken = tmp_path / "components"
    (broken / "ingest").mkdir(parents=True)
    (broken / "ingest" / "component.yaml").write_text("name: ingest\nimplementation: [\n")
    result = simrec("compile", "--components-dir", str(broken), "--output", str(tmp_path / "ir.yaml"))
    assert result.returncode != 0
    assert f"{broken / 'ingest' / 'component.yaml'}: not a valid component" in result.stderr


def test_committed_ir_matches_the_sources(tmp_path) -> None:
    """pipelines/simrec.yaml is what the KFP UI uploads: recompile it when components/ or conf/ change."""
    fresh = compile_pipeline(load_config("full"), tmp_path / "fresh.yaml").read_text()
    committed = (CHECKOUT / "pipelines" / "simrec.yaml").read_text()
    # compared as data: the header comment prints protobuf maps in no fixed order
    assert list(yaml.safe_load_all(committed)) == list(yaml.safe_load_all(fresh)), (
        "pipelines/simrec.yaml is stale: run `simrec compile`"
    )


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.parent.name)
def test_component_readme_is_generated_from_the_yaml(path: Path) -> None:
    readme = path.parent / "README.md"
    assert readme.exists() and readme.read_text() == render(path), f"{readme} is stale: run `simrec docs`"
