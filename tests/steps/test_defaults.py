"""Training defaults live in components/train/component.yaml (what engineers edit, what the pipeline
uses); the Python defaults (TrainParams, the step parsers, tune's fixed hyperparameters) must equal them."""

from pathlib import Path

import pytest
import yaml

from simrec.steps.train import build_parser as train_parser
from simrec.steps.tune import build_parser as tune_parser
from simrec.train.params import VALIDATION_FRACTION, TrainParams

COMPONENTS = Path(__file__).resolve().parents[2] / "components"


def _defaults(step: str) -> dict[str, object]:
    spec = yaml.safe_load((COMPONENTS / step / "component.yaml").read_text())
    return {i["name"]: i["default"] for i in spec["inputs"] if "default" in i}


@pytest.mark.parametrize("name", list(TrainParams.model_fields))
def test_train_params_defaults_are_the_train_components(name: str) -> None:
    assert _defaults("train")[name] == TrainParams.model_fields[name].default, (
        f"{name}: components/train/component.yaml and TrainParams disagree"
    )


def test_tune_and_train_share_defaults_and_the_validation_split() -> None:
    tune, train = _defaults("tune"), _defaults("train")
    assert tune["validation_fraction"] == train["validation_fraction"] == VALIDATION_FRACTION
    for name in ("architecture", "batch_size"):  # tune's values for hyperparameters it does not search
        assert tune[name] == train[name]
    required = ["--lineage", "l", "--search-space", "{}", "--max-evals", "1", "--best-params-out", "b"]
    tune_args = tune_parser().parse_args([*required, "--summary-out", "s"])
    train_args = train_parser().parse_args(["--lineage", "l", "--checkpoint-dir", "c", "--model-out", "m"])
    assert (tune_args.architecture, tune_args.batch_size) == (train["architecture"], train["batch_size"])
    assert tune_args.validation_fraction == train_args.validation_fraction == VALIDATION_FRACTION
