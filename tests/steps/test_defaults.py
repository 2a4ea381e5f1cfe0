"""Training defaults are edited in one place, components/train/component.yaml: Python has none to drift."""

import pytest

from simrec.infra.errors import InputError
from simrec.steps.train import build_parser as train_parser
from simrec.steps.tune import build_parser as tune_parser
from simrec.steps.tune import main as tune_main
from simrec.train.params import TrainParams, train_component_defaults


def test_train_params_have_no_python_defaults() -> None:
    assert [name for name, field in TrainParams.model_fields.items() if not field.is_required()] == []


def test_the_train_component_gives_every_hyperparameter_a_valid_default() -> None:
    defaults = train_component_defaults()
    assert set(TrainParams.model_fields) | {"validation_fraction"} <= set(defaults)
    assert TrainParams.component_defaults().model_dump() == {n: defaults[n] for n in TrainParams.model_fields}


@pytest.mark.parametrize("missing", ["--dropout", "--validation-fraction"])
def test_train_cli_requires_every_hyperparameter(missing: str, capsys) -> None:
    values = TrainParams.component_defaults().model_dump() | {"validation_fraction": 0.1}
    argv = ["--lineage", "l", "--checkpoint-root", "c", "--model-out", "m"]
    for name, value in values.items():
        if f"--{name.replace('_', '-')}" != missing:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    with pytest.raises(SystemExit):
        train_parser().parse_args(argv)
    assert missing in capsys.readouterr().err


def test_tune_cli_requires_the_training_parameters_and_validation_split(capsys) -> None:
    with pytest.raises(SystemExit):
        tune_parser().parse_args(["--lineage", "l", "--search-space", "{}", "--max-evals", "1"])
    error = capsys.readouterr().err
    assert all(flag in error for flag in ("--train-params", "--validation-fraction", "--architecture"))


def test_tunes_best_values_are_checked_one_by_one(tmp_path) -> None:
    best = tmp_path / "best.json"
    best.write_text('{"dropout": 0.2, "embedding_dim": 64}')
    assert TrainParams.values_from_file(best) == {"dropout": 0.2, "embedding_dim": 64}
    for text, problem in (('{"dropout": 1.5}', "dropout"), ('{"depth": 3}', "unknown"), ("[1]", "object")):
        best.write_text(text)
        with pytest.raises(InputError, match=problem):
            TrainParams.values_from_file(best)


@pytest.mark.parametrize(
    ("train_params", "problem"),
    [("{", "not valid JSON"), ("[1]", "JSON object"), ('{"dropout": 0.3}', "Field required")],
)
def test_tune_refuses_bad_training_parameters_before_starting(train_params: str, problem: str) -> None:
    argv = ["--lineage", "{}", "--search-space", '{"dropout": {"dist": "uniform", "low": 0.1, "high": 0.2}}']
    argv += ["--max-evals", "1", "--train-params", train_params, "--architecture", "seed"]
    argv += [
        "--batch-size",
        "8",
        "--validation-fraction",
        "0.1",
        "--best-params-out",
        "b",
        "--summary-out",
        "s",
    ]
    with pytest.raises(InputError, match=problem):
        tune_main(argv)
