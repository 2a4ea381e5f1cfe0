"""Hyperopt TPE over SparkTrials on small generated data: nested MLflow runs, failures recorded."""

import json

import mlflow
import pytest
from train_cli import hyperparameter_flags

from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.steps.train import main as train_main
from simrec.steps.tune import main as tune_main
from simrec.steps.tune import tune
from simrec.train.params import TrainParams, train_component_defaults
from simrec.tune.space import parse_space

BASE = TrainParams.component_defaults(architecture="seed", embedding_dim=16, batch_size=32)
VALIDATION = train_component_defaults()["validation_fraction"]
SPACE = {
    "learning_rate": {"dist": "loguniform", "low": 0.001, "high": 0.01},
    "embedding_dim": {"dist": "choice", "options": [8, 16]},
    "dropout": {"dist": "uniform", "low": 0.0, "high": 0.3},
}


def _children(parent_run_id: str) -> list:
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        output_format="list",
    )


def test_four_evaluations_in_parallel_feed_training(spark, lineage_file, tracking, tmp_path) -> None:
    best_file, summary_file = tmp_path / "best.json", tmp_path / "summary.json"
    executor_input = {  # the part of KFP's executor input a step reads to publish output metadata
        "outputs": {
            "outputFile": str(tmp_path / "executor_output.json"),
            "artifacts": {
                "summary": {"artifacts": [{"name": "summary", "type": {"schemaTitle": "system.Metrics"}}]}
            },
        }
    }
    tune_main(
        [
            "--lineage",
            str(lineage_file),
            "--search-space",
            json.dumps(SPACE),
            "--max-evals",
            "4",
            "--parallelism",
            "2",
            "--train-params",
            BASE.model_dump_json(),
            "--architecture",
            "seed",
            "--batch-size",
            "32",
            "--validation-fraction",
            str(VALIDATION),
            "--data-fraction",
            "1.0",
            "--best-params-out",
            str(best_file),
            "--summary-out",
            str(summary_file),
            "--executor-input",
            json.dumps(executor_input),
        ]
    )
    summary = json.loads(summary_file.read_text())
    published = json.loads((tmp_path / "executor_output.json").read_text())["artifacts"]["summary"]
    (artifact,) = published["artifacts"]
    assert artifact["name"] == "summary" and artifact["metadata"] == {
        k: summary[k]
        for k in ("trials", "succeeded", "failed", "killed", "best_val_recall_at_1", "wall_seconds")
    }
    assert (summary["trials"], summary["succeeded"], summary["failed"], summary["parallelism"]) == (
        4,
        4,
        0,
        2,
    )
    children = _children(summary["parent_run_id"])
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    best_runs = [c for c in children if c.data.tags.get("simrec.best_trial") == "true"]
    assert [r.info.run_id for r in best_runs] == [summary["best_trial_run_id"]]
    assert best_runs[0].data.metrics["val_recall_at_1"] == pytest.approx(summary["best_val_recall_at_1"])
    parent_artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(summary["parent_run_id"])}
    assert {"trials.png", "search_space.json"} <= parent_artifacts
    best = json.loads(best_file.read_text())
    assert set(best) == set(SPACE) and best["embedding_dim"] in (8, 16)

    train_main(
        [
            "--lineage",
            str(lineage_file),
            "--best-params",
            str(best_file),
            *hyperparameter_flags(architecture="seed", batch_size=32, epochs=1),
            "--checkpoint-root",
            str(tmp_path / "ckpt"),
            "--model-out",
            str(tmp_path / "model"),
        ]
    )
    trained = json.loads((tmp_path / "model" / "training.json").read_text())["params"]
    assert {k: trained[k] for k in best} == pytest.approx(best)


def test_a_failing_configuration_is_recorded_and_the_search_finishes(spark, lineage_file, tracking) -> None:
    space = parse_space({"batch_size": {"dist": "choice", "options": [32, 4096]}})  # 4096 > the rows
    best, summary = tune(
        spark,
        read_lineage(lineage_file),
        space,
        max_evals=4,
        parallelism=2,
        base=BASE,
        validation_fraction=VALIDATION,
        data_fraction=1.0,
        seed=3,
    )
    assert summary["trials"] == 4 and summary["failed"] >= 1 and summary["succeeded"] >= 1
    assert best == {"batch_size": 32}
    assert all("exceeds" in f["error"] for f in summary["failures"])
    statuses = sorted(c.info.status for c in _children(summary["parent_run_id"]))
    assert statuses.count("FAILED") == summary["failed"]


def test_trials_over_their_time_limit_fail_and_are_reported(spark, lineage_file, tracking) -> None:
    space = parse_space({"learning_rate": {"dist": "uniform", "low": 0.001, "high": 0.002}})
    with pytest.raises(InputError, match=r"all 2 tuning trials failed; the first: TrialTimeout"):
        tune(
            spark,
            read_lineage(lineage_file),
            space,
            max_evals=2,
            parallelism=2,
            base=BASE,
            validation_fraction=VALIDATION,
            trial_timeout_s=0.01,
        )


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learning_rate": {"dist": "normal", "low": 0, "high": 1}}, r"learning_rate: dist: Input should be"),
        ({"dropout": {"dist": "uniform", "low": 0.5, "high": 0.1}}, r"dropout: .*low 0.5 > high 0.1"),
        ({"colour": {"dist": "choice", "options": ["red"]}}, r"unknown hyperparameter 'colour'"),
        ({"epochs": {"dist": "choice", "options": [1]}}, r"unknown hyperparameter 'epochs'"),
        ({"embedding_dim": {"dist": "uniform", "low": 8, "high": 64}}, r"embedding_dim is an integer"),
        ({"learning_rate": {"dist": "loguniform", "low": 0.0, "high": 0.1}}, r"loguniform needs low > 0"),
        (
            {"learning_rate": {"dist": "uniform", "low": 0.001, "high": 5.0}},
            r"learning_rate: .*less than or equal to 1",
        ),
        ({"loss": {"dist": "choice", "options": ["ms", "triplet"]}}, r"loss: .*Input should be 'ms'"),
        ({}, r"non-empty mapping"),
    ],
)
def test_invalid_spaces_are_refused(space, message) -> None:
    with pytest.raises(InputError, match=message):
        parse_space(space)


def test_first_points_must_fit_the_space() -> None:
    from simrec.tune.search import hyperopt_point

    space = parse_space(SPACE)
    point = {"learning_rate": 0.002, "embedding_dim": 16, "dropout": 0.1}
    assert hyperopt_point(space, point) == {"learning_rate": 0.002, "embedding_dim": 1, "dropout": 0.1}
    with pytest.raises(InputError, match=r"embedding_dim=32 is not one of \[8, 16\]"):
        hyperopt_point(space, point | {"embedding_dim": 32})
    with pytest.raises(InputError, match="must set exactly"):
        hyperopt_point(space, {"learning_rate": 0.002})


# Trials of known order and length: FAST runs one step per epoch, SLOW (a bigger model, batch 4) 135,
# and FAILING stops at once (its batch exceeds the rows).
FAST, SLOW = {"architecture": "seed", "batch_size": 512}, {"architecture": "strong", "batch_size": 4}
FAILING = {"architecture": "seed", "batch_size": 4096}
TIMED_SPACE = {"architecture": {"dist": "choice", "options": ["seed", "strong"]}} | {
    "batch_size": {"dist": "choice", "options": [512, 4, 4096]}
}


def _killed_is_the_slow_trial(parent_run_id: str) -> str:
    children = _children(parent_run_id)
    assert "RUNNING" not in {c.info.status for c in children}
    (killed,) = [c for c in children if c.info.status == "KILLED"]
    assert (killed.data.params["architecture"], killed.data.params["batch_size"]) == ("strong", "4")
    return killed.info.run_id


def test_a_trial_cut_by_the_overall_timeout_is_marked_killed(spark, lineage_file, tracking) -> None:
    # One at a time: the failing trial shows the trial worker has started; the slow one (minutes) is then
    # still running when the 60 s search ends.
    with pytest.raises(InputError, match=r"1 failed, 1 killed when the search stopped \(fmin run timeout\)"):
        tune(
            spark,
            read_lineage(lineage_file),
            parse_space(TIMED_SPACE),
            max_evals=2,
            parallelism=1,
            base=BASE,
            validation_fraction=VALIDATION,
            trial_epochs=200,
            data_fraction=1.0,
            timeout_s=60,
            first_points=[FAILING, SLOW],
        )
    (parent,) = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.run_name = 'tune'", output_format="list"
    )
    _killed_is_the_slow_trial(parent.info.run_id)
    assert sorted(c.info.status for c in _children(parent.info.run_id)) == ["FAILED", "KILLED"]


def test_early_stop_ends_the_search_and_kills_the_running_trial(spark, lineage_file, tracking) -> None:
    # At parallelism 2 the fast and the slow trial start together; the fast one finishes, the same fast
    # configuration runs again and does no better, so early stopping (1 round) ends the search while the
    # slow trial is still training.
    best, summary = tune(
        spark,
        read_lineage(lineage_file),
        parse_space(TIMED_SPACE),
        max_evals=4,
        parallelism=2,
        base=BASE,
        validation_fraction=VALIDATION,
        trial_epochs=30,
        data_fraction=1.0,
        early_stop_rounds=1,
        first_points=[FAST, SLOW, FAST, FAST],
    )
    assert summary["stopped_by"] == "early stopping condition" and best == FAST
    assert summary["succeeded"] >= 2 and summary["killed"] == 1 and summary["cancelled"] >= 1
    assert summary["killed_run_ids"] == [_killed_is_the_slow_trial(summary["parent_run_id"])]
