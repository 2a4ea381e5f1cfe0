"""Configuration: conf/base/simrec.yaml, overlaid by conf/<profile>/simrec.yaml, overlaid by
SIMREC__SECTION__KEY environment variables; validated once, here, with errors that name the source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simrec import paths
from simrec.errors import InputError, validation_problems
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


class SparkConfig(_Section):
    master: str = "local[*]"
    driver_memory: str = "4g"
    packages: list[str] = Field(
        default_factory=list, description="extra Maven packages for the session, e.g. hadoop-aws for s3a://"
    )


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
    """What differs between profiles; every other hyperparameter is a default in components/train."""

    workers: int = Field(1, ge=1, description="Horovod ranks (one GPU each when accelerator is set)")
    epochs: int = Field(10, ge=1)
    architecture: Literal["seed", "strong"] = "strong"
    batch_size: int = Field(128, ge=4)
    accelerator: str | None = Field(
        None, description="Kubernetes GPU resource for training, e.g. nvidia.com/gpu"
    )
    checkpoint_pvc: str | None = Field(
        None, description="PersistentVolumeClaim mounted at storage.checkpoint_root for the train task"
    )
    exclude_classes: str = Field(
        "",
        pattern=r"^(\d(,\d)*)?$",
        description="classes left out of training, e.g. 2,4,6; evaluate reports retrieval among them",
    )


class EvaluateConfig(_Section):
    """The blessing gate: bless when test recall@1 >= min_recall_at_1 and not below the champion's by more
    than max_regression."""

    model_name: str = Field("simrec", min_length=1, description="the registered model in MLflow")
    gate_mode: Literal["enabled", "dry-run", "disabled"] = "enabled"
    min_recall_at_1: float = Field(0.0, ge=0.0, le=1.0)
    max_regression: float = Field(0.0, ge=0.0, le=1.0)


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


class ServeConfig(_Section):
    """Where deploy rolls the champion out to."""

    server: str | None = Field(None, description="endpoint URL (token: SIMREC_SERVE_TOKEN); null: local")
    port: int = Field(8080, ge=1, le=65535, description="port of the local simrec serve")
    state_dir: str = Field(description="local server's folder: pid, port, token, log, packages")

    @field_validator("state_dir")
    @classmethod
    def _resolve(cls, location: str) -> str:
        return _absolute(location)


class SimrecConfig(_Section):
    profile: Literal["smoke", "embedded", "full"]
    storage: StorageConfig
    spark: SparkConfig = SparkConfig()
    ingest: IngestConfig
    train: TrainConfig = TrainConfig()
    tune: TuneConfig
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig


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
