"""The simrec pipeline: component YAML under components/ wired into one KFP v2 DAG, and its compilation.

The YAML files are the contract: images, commands, inputs and their defaults live there, so editing a
component needs no Python change. The pipeline only wires outputs to inputs, passes the run's parameters
(their defaults come from the configuration profile at compile time) and adds platform settings.

About 370 lines: one short helper per task's platform settings beside the DAG they belong to, so a reader
sees what each pod gets where the task is wired."""

# No "from __future__ import annotations": KFP reads the pipeline function's annotations as types.
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, components, dsl, kubernetes

from simrec.config import SimrecConfig
from simrec.infra import paths
from simrec.infra.errors import InputError
from simrec.infra.files import atomic_write
from simrec.pipeline import backend
from simrec.records import ENGINE_TOKEN_KEY, ENGINE_TOKEN_VARIABLE
from simrec.registry.tracking import ARTIFACT_ROOT_ENV, PIPELINE_RUN_ENV
from simrec.train.params import TRAIN_COMPONENT, TrainParams, component_input_defaults

PIPELINE_NAME = "simrec"
STEPS = ("ingest", "tune", "train", "evaluate", "validate", "register", "deploy")
# Kubernetes Secrets the cluster provides (charts/); embedded runs ignore platform settings.
OBJECT_STORE_SECRET = "simrec-object-store"
OBJECT_STORE_KEYS = {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
MLFLOW_SECRET = "simrec-mlflow"
MLFLOW_KEYS = {key: key for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
# Spark's GPU discovery script at the path Spark's distribution keeps it; the pyspark wheel lacks it, so
# images/steps-gpu (the executors' image) puts one there.
# Where the executor pod template's ConfigMap is mounted in the driver (train/tune) pods.
POD_TEMPLATE_DIR = "/etc/simrec/spark"
POD_TEMPLATE_KEY = "executor-pod-template.yaml"
SPARK_GPU_DISCOVERY_SCRIPT = "/opt/spark/examples/src/main/scripts/getGpusResources.sh"
# Env var -> downward API field of the task pod that drives Spark executor pods (read by simrec.infra.spark).
DRIVER_POD_FIELDS = {
    "SIMREC_POD_IP": "status.podIP",
    "SIMREC_POD_NAME": "metadata.name",
    "SIMREC_POD_NAMESPACE": "metadata.namespace",
}
# Argo labels every pod of a run with its Workflow's name; KFP substitutes no run identity into inputs
# on 2.4.1 (backend/src/v2/driver/driver.go), so register reads it from the pod.
RUN_LABEL_FIELD = "metadata.labels['workflows.argoproj.io/workflow']"
# NCCL's shared-memory transport needs more than a container's 64 MiB /dev/shm.
SHARED_MEMORY_PATH = "/dev/shm"
Ops = dict[str, Callable[..., dsl.PipelineTask]]  # step name -> its component


def load_step(name: str, components_dir: Path, image: str | None = None) -> Callable[..., dsl.PipelineTask]:
    """The component in components/<name>/component.yaml; `image` replaces its image (the same program
    in another build of its environment, e.g. the CUDA one for training on GPUs)."""
    path = components_dir / name / "component.yaml"
    try:
        if image is None:
            return components.load_component_from_file(str(path))
        spec = yaml.safe_load(path.read_text())
        spec["implementation"]["container"]["image"] = image
        return components.load_component_from_text(yaml.safe_dump(spec, sort_keys=False))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: component file not found") from exc
    except Exception as exc:  # kfp raises many types for malformed YAML; all mean the same to the user
        raise InputError(f"{path}: not a valid component: {exc}") from exc


def spark_conf(config: SimrecConfig) -> dict[str, str]:
    """Spark settings beyond the master for a k8s:// master: executor pods with the steps image, GPUs (one
    Horovod rank or tuning trial per GPU) and the checkpoint claim at the driver's path. Empty otherwise."""
    if not config.spark.on_kubernetes:
        return {}
    k8s = config.spark.kubernetes
    volume = "spark.kubernetes.executor.volumes.persistentVolumeClaim.checkpoints"
    conf = {
        "spark.kubernetes.container.image": str(k8s.executor_image),
        "spark.executor.instances": str(k8s.executor_instances),
        f"{volume}.options.claimName": str(k8s.checkpoint_pvc),
        f"{volume}.mount.path": config.storage.checkpoint_root,
    }
    if k8s.pod_template_config_map:
        conf["spark.kubernetes.executor.podTemplateFile"] = f"{POD_TEMPLATE_DIR}/{POD_TEMPLATE_KEY}"
    if k8s.executor_gpus:
        conf |= {
            "spark.executor.resource.gpu.amount": str(k8s.executor_gpus),
            "spark.executor.resource.gpu.vendor": "nvidia.com",
            "spark.executor.resource.gpu.discoveryScript": SPARK_GPU_DISCOVERY_SCRIPT,
            "spark.task.resource.gpu.amount": "1",
        }
    return conf


def _spark_env(task: dsl.PipelineTask, config: SimrecConfig) -> None:
    task.set_env_variable("SIMREC_SPARK_MASTER", config.spark.master)
    task.set_env_variable("SIMREC_SPARK_DRIVER_MEMORY", config.spark.driver_memory)
    if config.spark.packages:
        task.set_env_variable("SIMREC_SPARK_PACKAGES", ",".join(config.spark.packages))
    if conf := spark_conf(config):
        task.set_env_variable("SIMREC_SPARK_CONF", json.dumps(conf, sort_keys=True))
        # The task pod as Spark's driver, from the downward API: executor pods connect back to its address,
        # are created in its namespace (KFP runs pods in `kubeflow` or a profile's namespace, never
        # Spark's `default`) and are owned by it, so they go when the driver pod goes.
        for env_name, field_path in DRIVER_POD_FIELDS.items():
            kubernetes.use_field_path_as_env(task, env_name=env_name, field_path=field_path)
        if template := config.spark.kubernetes.pod_template_config_map:
            kubernetes.use_config_map_as_volume(task, template, mount_path=POD_TEMPLATE_DIR)
    kubernetes.use_secret_as_env(task, OBJECT_STORE_SECRET, OBJECT_STORE_KEYS)


def _resources(task: dsl.PipelineTask, config: SimrecConfig, step: str) -> None:
    spec = config.task_resources(step)
    task.set_cpu_request(spec.cpu_request).set_cpu_limit(spec.cpu_limit)
    task.set_memory_request(spec.memory_request).set_memory_limit(spec.memory_limit)


def _mlflow_env(task: dsl.PipelineTask, config: SimrecConfig) -> None:
    task.set_env_variable("MLFLOW_TRACKING_URI", config.storage.mlflow_tracking_uri)
    if config.storage.mlflow_artifact_root:
        task.set_env_variable(ARTIFACT_ROOT_ENV, config.storage.mlflow_artifact_root)
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, MLFLOW_KEYS)


def _task(op: Callable[..., dsl.PipelineTask], **wired: Any) -> dsl.PipelineTask:
    """The component called with every input: what the pipeline wires, and each other input's default
    from its YAML (still edited there only). KFP 2.17.0 fails a task that leaves out an input with a
    default (kubeflow/pipelines #14175), and older launchers never see a left-out optional input."""
    spec = op.component_spec  # type: ignore[attr-defined]
    defaults = {
        name: value.default
        for name, value in spec.inputs.items()
        if name not in wired and value.default is not None
    }
    try:
        return op(**defaults, **wired)
    except TypeError as exc:  # the YAML lost or renamed an input the pipeline wires
        raise InputError(f"component {spec.name}: {exc}") from exc


def _step(ops: Ops, config: SimrecConfig, step: str, **wired: Any) -> dsl.PipelineTask:
    """The step's task with its wired inputs and the pod resources the profile gives it."""
    task = _task(ops[step], **wired)
    _resources(task, config, step)
    return task


def _ingest(ops: Ops, config: SimrecConfig, **wired: Any) -> dsl.PipelineTask:
    ingest = _step(ops, config, "ingest", **wired)
    # Ingest is where changes in the source are noticed, so it always runs. It is idempotent and
    # publishes the data's identity (table versions) as a *parameter*: KFP caches downstream tasks on
    # parameter values, while an artifact from a task that ran again is always new to it.
    ingest.set_caching_options(False)
    _spark_env(ingest, config)
    return ingest


def _tune(
    ops: Ops,
    config: SimrecConfig,
    train_defaults: dict[str, Any],
    train_params: dict[str, Any],
    **wired: Any,
) -> dsl.PipelineTask:
    tune = _step(
        ops,
        config,
        "tune",
        # trials train what train would: its component's defaults, edited in that one file
        train_params=train_params,
        validation_fraction=train_defaults["validation_fraction"],
        **wired,
    )
    _spark_env(tune, config)
    _mlflow_env(tune, config)
    return tune


def _train(ops: Ops, config: SimrecConfig, **wired: Any) -> dsl.PipelineTask:
    train = _step(
        ops,
        config,
        "train",
        # Ranks are fixed at compile time: they are the GPUs the pod requests, and KFP's driver only
        # requests a GPU count that is a constant (a parameter there resolves to no GPU at all).
        workers=config.train.workers,
        # where the claim is mounted; train names its own subfolder by what it trains
        checkpoint_root=config.storage.checkpoint_root,
        **wired,
    )
    _spark_env(train, config)
    _mlflow_env(train, config)
    train.set_retry(2)  # a retried task resumes from its checkpoints
    if config.train.checkpoint_pvc:
        kubernetes.mount_pvc(
            train, pvc_name=config.train.checkpoint_pvc, mount_path=config.storage.checkpoint_root
        )
    if config.train.accelerator and not config.spark.on_kubernetes:
        _gpus_in_pod(train, config)
    return train


def _gpus_in_pod(train: dsl.PipelineTask, config: SimrecConfig) -> None:
    """Single node, multi-GPU: the pod gets one GPU per Horovod rank, and the ranks run in it. (With a
    k8s:// master the ranks run in executor pods, which request the GPUs instead.)"""
    train.set_accelerator_type(config.train.accelerator)
    train.set_accelerator_limit(config.train.workers)
    kubernetes.add_toleration(train, key=config.train.accelerator, operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(
        train,
        volume_name="shared-memory",
        mount_path=SHARED_MEMORY_PATH,
        medium="Memory",
        size_limit=config.train.shared_memory,
    )


def _evaluate(ops: Ops, config: SimrecConfig, **wired: Any) -> dsl.PipelineTask:
    # The index kind and the vector engine follow the catalogue's size, a property of the deployment:
    # fixed per profile when the pipeline is compiled, like deploy's endpoint.
    engine = config.evaluate.vector_engine
    evaluate = _step(
        ops,
        config,
        "evaluate",
        **config.evaluate.index.component_inputs(),
        **(engine.component_inputs() if engine else {}),
        **wired,
    )
    _spark_env(evaluate, config)
    _mlflow_env(evaluate, config)
    if engine and engine.token_secret:
        kubernetes.use_secret_as_env(evaluate, engine.token_secret, {ENGINE_TOKEN_KEY: ENGINE_TOKEN_VARIABLE})
    return evaluate


def _register(ops: Ops, config: SimrecConfig, **wired: Any) -> dsl.PipelineTask:
    register = _step(ops, config, "register", **wired)
    _mlflow_env(register, config)
    kubernetes.use_field_path_as_env(register, env_name=PIPELINE_RUN_ENV, field_path=RUN_LABEL_FIELD)
    # A new version and alias moves on every run that reaches it; a cached register would skip them.
    register.set_caching_options(False)
    return register


def _deploy(ops: Ops, config: SimrecConfig, **wired: Any) -> dsl.PipelineTask:
    # Fixed at compile time like the checkpoint root: where the cluster serves is not a run choice.
    kserve = config.serve.kserve.model_dump(mode="json", exclude_none=True) if config.serve.kserve else {}
    # KServe's predictor reaches the engine evaluate publishes to as the profile says; a local or --server
    # endpoint uses the URI each package records, or its own `simrec serve --vector-engine-uri`.
    engine = config.evaluate.vector_engine
    vector_engine = engine.model_dump(mode="json", exclude_none=True) if engine and kserve else {}
    deploy = _step(
        ops,
        config,
        "deploy",
        server=config.serve.server or "",
        kserve=kserve,  # KFP: no nulls
        vector_engine=vector_engine,
        **wired,
    )
    _mlflow_env(deploy, config)
    # Always runs: it makes sure the endpoint serves the champion (a no-op switch when it already does).
    deploy.set_caching_options(False)
    return deploy


def _image(config: SimrecConfig, step: str) -> str | None:
    """The image replacing the component's: train's build for the profile's hardware, if it names one."""
    return config.train.image if step == "train" else None


def _train_params(train_defaults: dict[str, Any]) -> dict[str, Any]:
    """Every training hyperparameter at the train component's default, checked as train checks them."""
    return TrainParams.parse(
        {name: train_defaults.get(name) for name in TrainParams.model_fields}, str(TRAIN_COMPONENT)
    ).model_dump()


def build_pipeline(config: SimrecConfig, components_dir: Path | None = None) -> Callable[..., Any]:
    components_dir = components_dir or paths.components_dir()
    ops = {step: load_step(step, components_dir, _image(config, step)) for step in STEPS}
    train_defaults = component_input_defaults(components_dir / TRAIN_COMPONENT)
    train_params = _train_params(train_defaults)

    @dsl.pipeline(name=PIPELINE_NAME, description="Fashion-MNIST catalogue -> visually similar items")
    def simrec_pipeline(
        lake_uri: str,
        source: str,
        checksums: str,
        epochs: int,
        architecture: str,
        batch_size: int,
        search_space: dict,
        max_evals: int,
        parallelism: int,
        trial_epochs: int,
        tune_data_fraction: float,
        exclude_classes: str,
        model_name: str,
        gate_mode: str,
        min_recall_at_1: float,
        max_regression: float,
        serve_port: int,
        serve_state_dir: str,
        git_sha: str = "unknown",
    ) -> None:
        # git_sha is the run's lineage label: KFP v2 runs have no labels, but parameters show in the UI.
        # The wiring is packed a few inputs a line (fmt: skip) so that the whole DAG reads on one screen.
        ingest = _ingest(ops, config, source=source, lake_uri=lake_uri, checksums=checksums)
        lineage = ingest.outputs["lineage"]
        tune = _tune(
            ops, config, train_defaults, train_params, lineage=lineage, search_space=search_space,
            max_evals=max_evals, parallelism=parallelism, architecture=architecture, batch_size=batch_size,
            trial_epochs=trial_epochs, data_fraction=tune_data_fraction, git_sha=git_sha,
        )  # fmt: skip
        train = _train(
            ops, config, lineage=lineage, best_params=tune.outputs["best_params"], epochs=epochs,
            architecture=architecture, batch_size=batch_size, exclude_classes=exclude_classes,
            git_sha=git_sha,
        )  # fmt: skip
        evaluate = _evaluate(
            ops, config, lineage=lineage, model=train.outputs["model"], lake_uri=lake_uri,
            exclude_classes=exclude_classes, model_name=model_name, gate_mode=gate_mode,
            min_recall_at_1=min_recall_at_1, max_regression=max_regression, git_sha=git_sha,
        )  # fmt: skip
        # Loaded and queried in the serving image before anything is registered (TFX's InfraValidator):
        # a package that fails stops the run here.
        validate = _step(ops, config, "validate", package=evaluate.outputs["package"])
        register = _register(
            ops, config, model=validate.outputs["model"], evaluation=evaluate.outputs["evaluation"],
            validation=validate.outputs["validation"], model_name=model_name, git_sha=git_sha,
        )  # fmt: skip
        _deploy(
            ops, config, registered=register.outputs["registered"], model_name=model_name, port=serve_port,
            state_dir=serve_state_dir,
        )  # fmt: skip

    return simrec_pipeline


def pipeline_arguments(config: SimrecConfig, components_dir: Path | None = None) -> dict[str, Any]:
    """The pipeline's parameter values for a configuration profile; training's come from the train
    component's defaults where the profile sets none."""
    train = component_input_defaults((components_dir or paths.components_dir()) / TRAIN_COMPONENT)
    return {
        "lake_uri": config.storage.lake_uri,
        "source": config.ingest.source,
        "checksums": config.ingest.checksums,
        "epochs": config.train.epochs or train["epochs"],
        "architecture": config.train.architecture or train["architecture"],
        "batch_size": config.train.batch_size or train["batch_size"],
        "search_space": config.tune.space,
        "max_evals": config.tune.max_evals,
        "parallelism": config.tune.parallelism,
        "trial_epochs": config.tune.trial_epochs,
        "tune_data_fraction": config.tune.data_fraction,
        "exclude_classes": config.train.exclude_classes,
        "model_name": config.evaluate.model_name,
        "gate_mode": config.evaluate.gate_mode,
        "min_recall_at_1": config.evaluate.min_recall_at_1,
        "max_regression": config.evaluate.max_regression,
        "serve_port": config.serve.port,
        "serve_state_dir": config.serve.state_dir,
    }


def compile_pipeline(config: SimrecConfig, package_path: Path, components_dir: Path | None = None) -> Path:
    """Writes the pipeline IR YAML (what the KFP UI uploads) with the profile's parameter defaults, in the
    form the oldest supported KFP backend executes; a construct it would not execute as written is refused
    (InputError naming each one) and nothing is written."""
    with tempfile.TemporaryDirectory() as scratch:
        compiled = Path(scratch) / "pipeline.yaml"
        compiler.Compiler().compile(
            build_pipeline(config, components_dir),
            str(compiled),
            pipeline_parameters=pipeline_arguments(config, components_dir),
        )
        text = compiled.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    spec, *rest = yaml.safe_load_all(text)
    platform = backend.lower_platform(rest[0]) if rest else None
    if violations := backend.check(spec, platform):
        listed = "\n".join(f"  - {violation}" for violation in violations)
        raise InputError(
            f"the pipeline uses {len(violations)} construct(s) that KFP {backend.OLDEST_KFP}+ would not "
            f"execute as written (see docs/cluster.md, support matrix):\n{listed}"
        )
    documents = [spec] + ([platform] if platform else [])
    body = "---\n".join(yaml.safe_dump(document, sort_keys=False) for document in documents)
    with atomic_write(package_path, "w") as out:
        out.write(header + body)
    return package_path
