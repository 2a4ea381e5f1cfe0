"""The hyperparameter search space: an editable mapping of TrainParams fields to distributions,
validated wherever it is read (the configuration at compile time, the tune step at run time)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from simrec.infra.errors import InputError, validation_problems
from simrec.train.params import TrainParams

NOT_SEARCHABLE = ("epochs", "seed")  # trials use tune's epochs per trial and seed


class Dimension(BaseModel):
    """One searched hyperparameter: `choice` of options, or `uniform`/`loguniform`/`quniform` in
    [low, high] (quniform: steps of q)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dist: Literal["choice", "uniform", "loguniform", "quniform"]
    options: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    q: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if self.dist == "choice":
            if not self.options or self.low is not None or self.high is not None:
                raise ValueError("choice takes a non-empty 'options' list and no low/high")
            return self
        if self.low is None or self.high is None or self.options is not None:
            raise ValueError(f"{self.dist} takes 'low' and 'high' and no options")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.dist == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if (self.dist == "quniform") != (self.q is not None):
            raise ValueError("q goes with quniform, and only with it")
        return self

    def values(self) -> list[Any]:
        """The values whose validity bounds the whole dimension: every option, or the two ends."""
        return list(self.options) if self.dist == "choice" else [self.low, self.high]


SearchSpace = dict[str, Dimension]


def parse_space(raw: Any, origin: str = "search space") -> SearchSpace:
    """A validated search space from a mapping (or its JSON text)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{origin}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{origin}: must be a non-empty mapping of hyperparameter -> distribution")
    space: SearchSpace = {}
    for name, spec in raw.items():
        if name not in TrainParams.model_fields or name in NOT_SEARCHABLE:
            searchable = sorted(set(TrainParams.model_fields) - set(NOT_SEARCHABLE))
            raise InputError(
                f"{origin}: unknown hyperparameter {name!r}; searchable: {', '.join(searchable)}"
            )
        try:
            space[name] = Dimension.model_validate(spec)
        except ValidationError as exc:
            raise InputError(f"{origin}: {name}: {validation_problems(exc.errors())}") from exc
        if TrainParams.model_fields[name].annotation is int and space[name].dist in ("uniform", "loguniform"):
            raise InputError(f"{origin}: {name} is an integer: use choice or quniform")
        for value in space[name].values():
            TrainParams.check_value(name, value, f"{origin}: {name}")
    return space


def space_json(space: SearchSpace) -> dict[str, Any]:
    return {name: dim.model_dump(exclude_none=True) for name, dim in space.items()}
