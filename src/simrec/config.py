"""Configuration: conf/base/simrec.yaml, overlaid by conf/<profile>/simrec.yaml, overlaid by
SIMREC__SECTION__KEY environment variables; validated once, here, with errors that name the source.

Longer than most modules (~500 lines) because it is the one schema of every profile section: split by
section, the cross-section checks and the error-naming loader would be spread over many files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simrec.infra import paths
from simrec.infra.errors import InputError, validation_problems
from simrec.records import (
    ENGINE_NAME_PATTERN,
    ENGINE_TOKEN_KEY,
    ENGINE_TOKEN_VARIABLE,
    INDEX_SMALLEST,
    GateMode,
    IndexKind,
)
from simrec.tune.space import parse_space, space_json

PROFILES = ("smoke", "embedded", "full")
CONFIG_FILE = "simrec.yaml"
ENV_PREFIX = "SIMREC__"


class ConfigError(InputError):
    """Configuration that cannot be loaded or does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(location: str) -> str:
    """Relative local paths are taken from the current directory, so every step sees the same place."""
    if location.startswith("sqlite:///") and not location.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(location.removeprefix("sqlite:///")).resolve())
    if "://" in location:
        return location
    return str(Path(location).expanduser().resolve())


class StorageConfig(_Section):
    lake_uri: str = Field(description="Root of the Delta tables (a folder, or s3a:// on a cluster)")
    mlflow_tracking_uri: str = Field(description="MLflow tracking store")
    runs_dir: str = Field(description="Where the embedded runner keeps run folders")
    checkpoint_root: str = Field(description="Persistent root for training checkpoints, one folder per run")
    mlflow_artifact_root: str | None = Field(
        None, description="Artifact location of new MLflow experiments; unset: the tracking server decides"
    )

    @field_validator("lake_uri", "mlflow_tracking_uri", "runs_dir", "checkpoint_root", "mlflow_artifact_root")
    @classmethod
    def _resolve(cls, location: str | None) -> str | None:
        return None if location is None else _absolute(location)


class SparkKubernetesConfig(_Section):
    """Spark on Kubernetes (master k8s://...): Horovod ranks and SparkTrials trials run in executor pods,
    which need the steps image, GPUs, and the checkpoint folder at the same path as the driver."""

    executor_image: str | None = Field(None, description="image of the executor pods (the steps image)")
    executor_instances: int | None = Field(None, ge=1, description="executor pods")
    executor_gpus: int = Field(0, ge=0, description="GPUs per executor pod, one Horovod rank each")
    checkpoint_pvc: str | None = Field(
        None,
        description="ReadWriteMany claim mounted in the executors at storage.checkpoint_root (rank 0 "
        "checkpoints there and Petastorm's cache lives there)",
    )
    pod_template_config_map: str | None = Field(
        None,
        description="ConfigMap holding executor-pod-template.yaml (charts/simrec renders "
        "simrec-spark-executor-template: GPU toleration, credentials, shared memory for NCCL)",
    )

    @property
    def configured(self) -> bool:
        return bool(
            self.executor_image or self.executor_instances or self.executor_gpus or self.checkpoint_pvc
        )


class SparkConfig(_Section):
    master: str = Field(
        "local[*]",
        description="local[*] / local[N]: Spark (and Horovod's ranks) inside the task's own process or pod; "
        "k8s://https://host: executor pods, see spark.kubernetes",
    )
    driver_memory: str = Field(
        "4g",
        description="the driver JVM's heap (Spark's size: 4g, 512m); at most 3/4 of each Spark task's "
        "memory_limit, the rest is the JVM's own and Python's",
    )
    packages: list[str] = Field(
        default_factory=list, description="extra Maven packages for the session, e.g. hadoop-aws for s3a://"
    )
    kubernetes: SparkKubernetesConfig = SparkKubernetesConfig()

    @field_validator("driver_memory")
    @classmethod
    def _jvm_size(cls, size: str) -> str:
        if not _JVM_MEMORY.match(size):
            raise ValueError(f"not a JVM memory size (e.g. 4g or 512m): {size!r}")
        return size

    @field_validator("master")
    @classmethod
    def _known_master(cls, master: str) -> str:
        if not re.fullmatch(r"local(\[(\*|[1-9]\d*)\])?|k8s://\S+", master):
            raise ValueError(f"expected local, local[*], local[N] or k8s://URL, got {master!r}")
        return master

    @property
    def on_kubernetes(self) -> bool:
        return self.master.startswith("k8s://")

    @property
    def local_slots(self) -> int | None:
        """Task slots of a local master with a fixed count (local: 1, local[N]: N), else None."""
        if self.master == "local":
            return 1
        match = re.fullmatch(r"local\[(\d+)\]", self.master)
        return int(match.group(1)) if match else None


_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^\d+(\.\d+)?(E|P|T|G|M|K|Ei|Pi|Ti|Gi|Mi|Ki)?$")
_MEMORY_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_MEMORY_UNITS |= {f"{unit}i": 1024 ** "KMGTPE".index(unit[0]) * 1024 for unit in "KMGTPE"}


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


_JVM_MEMORY = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)


def jvm_bytes(size: str) -> int:
    """A JVM/Spark memory size ("4g", "512m": binary units) in bytes."""
    match = _JVM_MEMORY.match(size)
    assert match is not None
    return int(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " ")


def memory_bytes(quantity: str) -> float:
    number = re.match(r"^\d+(\.\d+)?", quantity)
    assert number is not None
    return float(number.group(0)) * _MEMORY_UNITS[quantity[number.end() :]]


class TaskResources(_Section):
    """Kubernetes requests and limits of one task's pod (Kubernetes quantities: cpu "500m" or "2",
    memory "4G" or "4Gi"). Embedded runs ignore them."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # SIMREC__RESOURCES__TRAIN__CPU_LIMIT=4 arrives as a YAML number
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("cpu_request", "cpu_limit")
    @classmethod
    def _cpu(cls, value: str) -> str:
        if not _CPU.match(value):
            raise ValueError(f"not a CPU quantity (e.g. 500m or 2): {value!r}")
        return value

    @field_validator("memory_request", "memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"not a memory quantity (e.g. 4G or 512Mi): {value!r}")
        return value

    @model_validator(mode="after")
    def _requests_within_limits(self) -> TaskResources:
        if cpu_cores(self.cpu_request) > cpu_cores(self.cpu_limit):
            raise ValueError(f"cpu_request {self.cpu_request} is above cpu_limit {self.cpu_limit}")
        if memory_bytes(self.memory_request) > memory_bytes(self.memory_limit):
            raise ValueError(
                f"memory_request {self.memory_request} is above memory_limit {self.memory_limit}"
            )
        return self


class IngestConfig(_Section):
    source: str = Field(description="Folder with the four IDX files, or an http(s) URL to download them from")
    checksums: str = Field(
        default="official",
        description="'official' (the Fashion-MNIST release), 'none', or a JSON file of name -> sha256",
    )

    @field_validator("source")
    @classmethod
    def _resolve(cls, location: str) -> str:
        return _absolute(location)


class TrainConfig(_Section):
    """What differs between profiles. Hyperparameters are defaults in components/train/component.yaml (the
    one place they are edited); epochs, architecture and batch_size are run parameters a profile may set,
    null meaning the component's default."""

    workers: int = Field(1, ge=1, description="Horovod ranks (one GPU each when accelerator is set)")
    epochs: int | None = Field(None, ge=1)
    architecture: Literal["seed", "strong"] | None = None
    batch_size: int | None = Field(None, ge=4)
    accelerator: str | None = Field(
        None, description="Kubernetes GPU resource for training, e.g. nvidia.com/gpu"
    )
    checkpoint_pvc: str | None = Field(
        None, description="PersistentVolumeClaim mounted at storage.checkpoint_root for the train task"
    )
    image: str | None = Field(
        None,
        description="image of the train task instead of its component's, e.g. the CUDA build "
        "simrec/steps-gpu:<version> (images/steps-gpu) on GPU nodes",
    )
    exclude_classes: str = Field(
        "",
        pattern=r"^(\d(,\d)*)?$",
        description="classes left out of training, e.g. 2,4,6; evaluate reports retrieval among them",
    )
    shared_memory: str = Field(
        "4Gi",
        pattern=_MEMORY.pattern,
        description="with an accelerator: size of the train pod's in-memory /dev/shm (NCCL needs more than "
        "a container's 64 MiB); it counts against resources.train.memory_limit",
    )


class IndexConfig(_Section):
    """The nearest-neighbour index evaluate builds into the package (simrec.retrieval.index.IndexSpec), fixed
    per profile when the pipeline is compiled. A setting left null keeps the evaluate component's default
    (components/evaluate/component.yaml, the one place defaults are edited). Which kind for which catalogue
    size, and what each costs: docs/cluster.md#choosing-the-index."""

    kind: IndexKind | None = None
    m: int | None = Field(None, ge=INDEX_SMALLEST["m"], description="hnsw, hnsw_sq8: graph degree")
    ef_search: int | None = Field(
        None, ge=INDEX_SMALLEST["ef_search"], description="hnsw, hnsw_sq8: search breadth"
    )
    nlist: int | None = Field(None, ge=INDEX_SMALLEST["nlist"], description="ivfpq: inverted lists")
    nprobe: int | None = Field(
        None, ge=INDEX_SMALLEST["nprobe"], description="ivfpq: lists searched per query"
    )
    pq_m: int | None = Field(
        None, ge=INDEX_SMALLEST["pq_m"], description="ivfpq: 4-bit PQ codes per item (pq_m/2 bytes)"
    )
    pca_dim: int | None = Field(
        None, ge=INDEX_SMALLEST["pca_dim"], description="ivfpq: dimensions PCA keeps; 0: no PCA"
    )
    rerank: int | None = Field(
        None, ge=INDEX_SMALLEST["rerank"], description="ivfpq: rerank x k candidates re-ranked"
    )

    def component_inputs(self) -> dict[str, Any]:
        """The evaluate component's index_* inputs this profile sets."""
        return {f"index_{name}": value for name, value in self.model_dump(exclude_none=True).items()}


class VectorEngineConfig(_Section):
    """A vector engine (Milvus) evaluate publishes the catalogue's vectors to, as the alias's next
    versioned collection `<alias>_v<N>` recorded in the package (docs/cluster.md, "Beyond one node").
    Unset: off, the package's in-process index only."""

    uri: str = Field(
        min_length=1,
        pattern=r"^\S+$",
        description="the engine, e.g. http://milvus.milvus:19530 (no credentials: see token_secret)",
    )
    alias: str = Field(
        "simrec",
        pattern=ENGINE_NAME_PATTERN,
        description="the catalogue's serving alias: letters, digits, underscores; not a digit first",
    )
    token_secret: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description=f"Kubernetes Secret whose key `{ENGINE_TOKEN_KEY}` is the engine's token "
        f"({ENGINE_TOKEN_VARIABLE} in the evaluate pod and in serve.kserve's predictor); null: none "
        "(embedded runs take the variable from the environment)",
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str) -> str:
        # the URI is compiled into the pipeline's IR, which anyone who can read runs can see
        if "@" in urlsplit(uri).netloc:
            raise ValueError("carries credentials (user:password@): give the token by token_secret instead")
        return uri

    def component_inputs(self) -> dict[str, Any]:
        """The evaluate component's vector_engine_* inputs."""
        return {"vector_engine_uri": self.uri, "vector_engine_alias": self.alias}


class EvaluateConfig(_Section):
    """The blessing gate: bless when test recall@1 >= min_recall_at_1 and not below the champion's by more
    than max_regression."""

    model_name: str = Field("simrec", min_length=1, description="the registered model in MLflow")
    gate_mode: GateMode = "enabled"
    min_recall_at_1: float = Field(0.0, ge=0.0, le=1.0)
    max_regression: float = Field(0.0, ge=0.0, le=1.0)
    index: IndexConfig = IndexConfig()
    vector_engine: VectorEngineConfig | None = None


class TuneConfig(_Section):
    max_evals: int = Field(4, ge=1)
    parallelism: int = Field(0, ge=0, description="concurrent trials; 0: the Spark session's task slots")
    trial_epochs: int = Field(1, ge=1)
    data_fraction: float = Field(0.2, gt=0.0, le=1.0)
    space: dict[str, Any] = Field(description="hyperparameter -> distribution; see simrec.tune.space")

    @field_validator("space")
    @classmethod
    def _valid_space(cls, space: dict[str, Any]) -> dict[str, Any]:
        return space_json(parse_space(space, "tune.space"))


_DNS_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


class KServeConfig(_Section):
    """The cluster endpoint: a KServe InferenceService (Serverless mode) that deploy updates with a canary
    (see simrec.kserve.manifest and docs/serving.md)."""

    namespace: str | None = Field(
        None,
        pattern=_DNS_LABEL,
        description="null: the namespace the deploy pod runs in (standalone KFP: kubeflow; multi-user "
        "Kubeflow: the profile's), so one compiled pipeline serves from whichever namespace runs it",
    )
    name: str = Field("simrec", pattern=_DNS_LABEL, description="the InferenceService")
    image: str | None = Field(None, description="serve image; null: simrec/serve:<project version>")
    canary_percent: int = Field(
        10, ge=1, le=100, description="traffic share of the new revision until promoted (100: no canary)"
    )
    promote: bool = Field(True, description="promote a healthy canary to 100%; false: leave the canary")
    timeout_s: float = Field(900.0, gt=0, description="how long a new revision may take to become ready")
    poll_s: float = Field(2.0, gt=0, description="how often deploy reads the InferenceService's status")
    artifacts_destination: str | None = Field(
        None,
        description="where the MLflow server keeps proxied artifacts (its --artifacts-destination, e.g. "
        "s3://bucket/mlflow): mlflow-artifacts:/ locations are read from there by KServe",
    )
    service_account: str | None = Field(
        None, description="predictor's service account, e.g. one with the storage initializer's S3 keys"
    )
    token_secret: str = Field("simrec-serve", description="Secret whose key `token` is the bearer token")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    resources: TaskResources = TaskResources(
        cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi"
    )


class ServeConfig(_Section):
    """Where deploy rolls the champion out to: a local `simrec serve`, a server URL, or KServe."""

    server: str | None = Field(
        None, description="endpoint URL (admin token: SIMREC_ADMIN_TOKEN); null: local"
    )
    kserve: KServeConfig | None = Field(None, description="a KServe InferenceService instead of a server")
    port: int = Field(8080, ge=1, le=65535, description="port of the local simrec serve")
    state_dir: str = Field(description="local server's folder: pid, port, token, log, packages")

    @field_validator("state_dir")
    @classmethod
    def _resolve(cls, location: str) -> str:
        return _absolute(location)

    @model_validator(mode="after")
    def _one_target(self) -> ServeConfig:
        if self.server and self.kserve:
            raise ValueError("give serve.server or serve.kserve, not both")
        return self


class RunnerConfig(_Section):
    """How `simrec run` executes each task on this machine."""

    containers: bool = Field(
        False,
        description="each task in its own image with podman, as in a pod (simrec run --containers); "
        "false: in the local environment standing for the image",
    )

    def shared_folders(self, config: SimrecConfig) -> tuple[list[Path], list[Path]]:
        """The folders a task's container shares with this machine: written (stores, runs, checkpoints,
        the local server's state) and only read (the dataset), at the paths the IR names."""
        storage = config.storage
        written = [storage.lake_uri, storage.runs_dir, storage.checkpoint_root, config.serve.state_dir]
        written += [storage.mlflow_artifact_root or ""]
        if storage.mlflow_tracking_uri.startswith("sqlite:///"):
            written.append(str(Path(storage.mlflow_tracking_uri.removeprefix("sqlite:///")).parent))
        elif "://" not in storage.mlflow_tracking_uri:  # a file store
            written.append(storage.mlflow_tracking_uri)
        local = [Path(location) for location in written if location and "://" not in location]
        source = [Path(config.ingest.source)] if "://" not in config.ingest.source else []
        return local, source


STEP_NAMES = ("ingest", "tune", "train", "evaluate", "validate", "register", "deploy")
SPARK_STEPS = ("ingest", "tune", "train", "evaluate")  # their pods run a Spark driver


class SimrecConfig(_Section):
    profile: Literal["smoke", "embedded", "full"]
    storage: StorageConfig
    spark: SparkConfig = SparkConfig()
    ingest: IngestConfig
    train: TrainConfig = TrainConfig()
    tune: TuneConfig
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig
    runner: RunnerConfig = RunnerConfig()
    resources: dict[str, TaskResources] = Field(
        description="per task (or 'default'): the pod's CPU and memory requests and limits on a cluster"
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _every_task(cls, resources: Any) -> Any:
        if not isinstance(resources, dict):
            return resources  # pydantic names the type error
        unknown = set(resources) - {"default", *STEP_NAMES}
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; expected default or one of {STEP_NAMES}")
        if "default" not in resources:
            raise ValueError("resources.default is required (the tasks without their own entry)")
        return resources

    def task_resources(self, task: str) -> TaskResources:
        return self.resources.get(task, self.resources["default"])

    @model_validator(mode="after")
    def _memory_fits_the_pods(self) -> SimrecConfig:
        """Spark's driver heap (and the train pod's in-memory /dev/shm) fit each pod's memory limit, or the
        kernel kills the pod mid-step."""
        heap = jvm_bytes(self.spark.driver_memory)
        for step in SPARK_STEPS:
            limit = self.task_resources(step).memory_limit
            if heap > 0.75 * memory_bytes(limit):
                raise ValueError(
                    f"spark.driver_memory {self.spark.driver_memory} does not fit the {step} pod: at most "
                    f"3/4 of resources.{step}.memory_limit {limit} (the JVM's own memory and Python need "
                    "the rest)"
                )
        if self.train.accelerator:
            limit = self.task_resources("train").memory_limit
            if heap + memory_bytes(self.train.shared_memory) > memory_bytes(limit):
                raise ValueError(
                    f"train.shared_memory {self.train.shared_memory} and spark.driver_memory "
                    f"{self.spark.driver_memory} exceed resources.train.memory_limit {limit}"
                )
        return self

    @model_validator(mode="after")
    def _cluster_shape(self) -> SimrecConfig:
        """A cluster shape is complete or refused: no half-configured GPU training."""
        spark, train = self.spark, self.train
        if not spark.on_kubernetes:
            if spark.kubernetes.configured:
                raise ValueError(f"spark.kubernetes is set but spark.master is {spark.master!r}, not k8s://")
            # Horovod's ranks are Spark tasks that must all run at once in the train task.
            slots = spark.local_slots or cpu_cores(self.task_resources("train").cpu_limit)
            cpu_limit = self.task_resources("train").cpu_limit
            if (spark.local_slots or train.accelerator) and slots < train.workers:
                raise ValueError(
                    f"train.workers {train.workers} needs as many Spark task slots; spark.master "
                    f"{spark.master} with resources.train.cpu_limit {cpu_limit} gives {slots:g}"
                )
            return self
        k8s = spark.kubernetes
        missing = [
            f"spark.kubernetes.{name}"
            for name, value in (
                ("executor_image", k8s.executor_image),
                ("executor_instances", k8s.executor_instances),
                ("checkpoint_pvc", k8s.checkpoint_pvc),
            )
            if not value
        ]
        if train.accelerator and not k8s.executor_gpus:
            missing.append("spark.kubernetes.executor_gpus (train.accelerator is set)")
        if not train.checkpoint_pvc:
            missing.append("train.checkpoint_pvc (the driver's view of the checkpoints)")
        if missing:
            raise ValueError(f"spark.master {spark.master} (executor pods) needs {', '.join(missing)}")
        slots = (k8s.executor_instances or 0) * max(1, k8s.executor_gpus)
        if train.accelerator and slots < train.workers:
            raise ValueError(
                f"train.workers {train.workers} ranks need one GPU each; executors offer "
                f"{k8s.executor_instances} x {k8s.executor_gpus}"
            )
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: configuration file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """SIMREC__INGEST__SOURCE=/data -> {"ingest": {"source": "/data"}}; values parse as YAML scalars."""
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(f"environment variable {name}: empty key segment")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: not a valid value: {exc}") from exc
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return overrides


def load_config(
    profile: str = "embedded",
    conf_dir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> SimrecConfig:
    """The validated configuration for a profile."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    conf_dir = conf_dir or paths.conf_dir()
    sources = [conf_dir / "base" / CONFIG_FILE, conf_dir / profile / CONFIG_FILE]
    data: dict[str, Any] = {}
    for path in sources:
        data = _merge(data, _read_yaml(path))
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    data["profile"] = profile
    try:
        return SimrecConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc.errors())
        raise ConfigError(
            f"invalid configuration (profile {profile}, from {', '.join(map(str, sources))} "
            f"and {ENV_PREFIX}* variables): {problems}"
        ) from exc
