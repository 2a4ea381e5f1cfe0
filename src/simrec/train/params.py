"""Training hyperparameters: one validated set shared by the train step, tuning trials and tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simrec.errors import InputError, validation_problems

LossName = Literal["ms", "softmax", "ms+softmax"]
# Share of the train table held out for validation, by a stable hash of item_id. Tune and train must use
# the same value, so that tuning never scores on rows training learns from.
VALIDATION_FRACTION = 0.1


class TrainParams(BaseModel):
    """Every default here must equal components/train/component.yaml's (and tune's architecture and
    batch_size): tests/steps/test_defaults.py fails on any difference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["seed", "strong"] = "strong"
    embedding_dim: int = Field(128, ge=2, le=2048)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(128, ge=4, le=8192)
    epochs: int = Field(10, ge=1, le=1000)
    loss: LossName = "ms+softmax"
    ms_alpha: float = Field(2.0, gt=0.0)
    ms_beta: float = Field(50.0, gt=0.0)
    ms_lambda: float = Field(0.5, ge=-1.0, le=1.0)
    ms_epsilon: float = Field(0.1, ge=0.0, le=2.0)
    softmax_scale: float = Field(16.0, gt=0.0, le=128.0)
    augment: bool = True
    seed: int = 0

    @classmethod
    def parse(cls, values: dict[str, Any], origin: str = "training parameters") -> TrainParams:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InputError(f"{origin}: {validation_problems(exc.errors())}") from exc

    @classmethod
    def from_file(cls, path: Path) -> TrainParams:
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: cannot read training parameters ({exc})") from exc
        if not isinstance(values, dict):
            raise InputError(f"{path}: training parameters must be a JSON object")
        return cls.parse(values, str(path))
