"""Training hyperparameters: one validated set shared by the train step, tuning trials and tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from simrec.infra import paths
from simrec.infra.errors import InputError, validation_problems

LossName = Literal["ms", "softmax", "ms+softmax"]
ScheduleName = Literal["constant", "cosine"]
TRAIN_COMPONENT = Path("train") / "component.yaml"


class TrainParams(BaseModel):
    """Validated ranges only. The defaults are edited in one place, components/train/component.yaml: the
    pipeline passes them to train and (for what tune does not search) to tune's trials; code that trains
    outside the pipeline (tests, benchmarks) starts from `component_defaults`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["seed", "strong"]
    embedding_dim: int = Field(ge=2, le=2048)
    dropout: float = Field(ge=0.0, lt=1.0)
    learning_rate: float = Field(gt=0.0, le=1.0)
    lr_schedule: ScheduleName
    batch_size: int = Field(ge=4, le=8192)
    epochs: int = Field(ge=1, le=1000)
    loss: LossName
    ms_alpha: float = Field(gt=0.0)
    ms_beta: float = Field(gt=0.0)
    ms_lambda: float = Field(ge=-1.0, le=1.0)
    ms_epsilon: float = Field(ge=0.0, le=2.0)
    softmax_scale: float = Field(gt=0.0, le=128.0)
    augment: bool
    flip_average: bool
    pixel_weight: float = Field(ge=0.0, lt=1.0)
    hog_weight: float = Field(ge=0.0, lt=1.0)
    seed: int

    @model_validator(mode="after")
    def _embedding_keeps_a_share(self) -> TrainParams:
        if self.pixel_weight + self.hog_weight >= 1.0:
            raise ValueError(
                f"pixel_weight + hog_weight must be below 1 (the embedding's share), got "
                f"{self.pixel_weight} + {self.hog_weight}"
            )
        return self

    @classmethod
    def parse(cls, values: dict[str, Any], origin: str = "training parameters") -> TrainParams:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InputError(f"{origin}: {validation_problems(exc.errors())}") from exc

    @classmethod
    def values_from_file(cls, path: Path) -> dict[str, Any]:
        """Some hyperparameters (e.g. tune's best), each checked, from a JSON object file."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise InputError(f"{path}: cannot read training parameters ({exc})") from exc
        values = json_object(text, str(path))
        for name, value in values.items():
            if name not in cls.model_fields:
                raise InputError(f"{path}: unknown training parameter {name!r}")
            cls.check_value(name, value, f"{path}: {name}")
        return values

    @classmethod
    def check_value(cls, name: str, value: Any, origin: str) -> None:
        """InputError unless `value` is valid for the hyperparameter `name`."""
        field = cls.model_fields[name]
        try:
            TypeAdapter(Annotated[field.annotation, field]).validate_python(value)
        except ValidationError as exc:
            raise InputError(f"{origin}: {validation_problems(exc.errors())}") from exc

    @classmethod
    def component_defaults(cls, **overrides: Any) -> TrainParams:
        """The train component's defaults (with overrides): what the pipeline would train with."""
        defaults = train_component_defaults()
        return cls.parse(
            {name: defaults.get(name) for name in cls.model_fields} | overrides, str(TRAIN_COMPONENT)
        )


def json_object(text: str, origin: str) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{origin}: training parameters are not valid JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise InputError(f"{origin}: training parameters must be a JSON object")
    return values


def train_component_defaults() -> dict[str, Any]:
    """Every default of components/train/component.yaml, validation_fraction included."""
    return component_input_defaults(paths.components_dir() / TRAIN_COMPONENT)


def component_input_defaults(path: Path) -> dict[str, Any]:
    """{input name: default} of a component YAML file."""
    try:
        spec = yaml.safe_load(path.read_text())
        return {item["name"]: item["default"] for item in spec["inputs"] if "default" in item}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: cannot read the component's input defaults ({exc})") from exc
