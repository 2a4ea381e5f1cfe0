"""Tune step: Hyperopt TPE over SparkTrials (trials in parallel as Spark tasks), each trial a nested
MLflow run that trains single-process on a fraction of the training split and scores validation
recall@1. Writes the best hyperparameters for the train step and a summary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.kfp_output import write_artifact_metadata
from simrec.infra.plots import trial_scores
from simrec.infra.progress import report
from simrec.records import Lineage
from simrec.registry.tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.train.params import TrainParams, json_object
from simrec.tune.search import (
    Objective,
    SearchOutcome,
    run_search,
    search_outcome,
    search_summary,
    trial_data,
)
from simrec.tune.space import SearchSpace, parse_space, space_json

log = logging.getLogger(__name__)


def _check_budget(max_evals: int, data_fraction: float) -> None:
    if max_evals < 1:
        raise InputError(f"max_evals must be at least 1, got {max_evals}")
    if not 0.0 < data_fraction <= 1.0:
        raise InputError(f"data fraction must be in (0, 1], got {data_fraction}")


def tune(
    spark: SparkSession,
    lineage: Lineage,
    space: SearchSpace,
    *,
    max_evals: int,
    base: TrainParams,
    validation_fraction: float,
    parallelism: int = 0,
    trial_epochs: int = 1,
    data_fraction: float = 0.2,
    trial_timeout_s: float = 900,
    timeout_s: float = 3600,
    early_stop_rounds: int = 0,
    seed: int = 0,
    experiment: str = DEFAULT_EXPERIMENT,
    git_sha: str = "unknown",
    first_points: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs the search; returns (best hyperparameters, summary). first_points are configurations (values
    for every searched hyperparameter) evaluated before TPE suggests any, e.g. a known good one; they
    count towards max_evals."""
    _check_budget(max_evals, data_fraction)
    started = time.perf_counter()
    base = base.model_copy(update={"epochs": trial_epochs, "seed": seed})
    parallelism = parallelism or spark.sparkContext.defaultParallelism
    train, validation = trial_data(spark, lineage, validation_fraction, data_fraction, seed)
    log.info(
        "tuning: %d evaluations, parallelism %d, %d train / %d validation rows per trial",
        max_evals, parallelism, len(train), len(validation),
    )  # fmt: skip
    with start_run(experiment, run_name="tune") as parent:
        mlflow.log_params(
            {
                "max_evals": max_evals,
                "parallelism": parallelism,
                "trial_epochs": trial_epochs,
                "data_fraction": data_fraction,
                "trial_rows": len(train),
            }
        )
        mlflow.log_dict(space_json(space), "search_space.json")
        mlflow.set_tags(lineage_tags(lineage, git_sha) | {"simrec.step": "tune"})
        threads = max(1, (os.cpu_count() or 1) // parallelism)
        objective = Objective(
            base, train, validation, parent.info.run_id, parent.info.experiment_id,
            mlflow.get_tracking_uri(), trial_timeout_s, threads=threads,
        )  # fmt: skip
        trials = run_search(
            spark, objective, space, max_evals=max_evals, parallelism=parallelism, timeout_s=timeout_s,
            early_stop_rounds=early_stop_rounds, seed=seed, first_points=first_points,
        )  # fmt: skip
        outcome = search_outcome(spark, trials, parent.info.run_id)
        wall_seconds = round(time.perf_counter() - started, 1)
        summary = search_summary(outcome, parent.info.run_id, parallelism, wall_seconds)
        _log_outcome(outcome, summary)
    return outcome.best["params"], summary


def _log_outcome(outcome: SearchOutcome, summary: dict[str, Any]) -> None:
    mlflow.MlflowClient().set_tag(outcome.best["mlflow_run_id"], "simrec.best_trial", "true")
    mlflow.log_figure(trial_scores(outcome.results), "trials.png")
    mlflow.log_metrics(
        {
            "best_val_recall_at_1": summary["best_val_recall_at_1"],
            "trials_failed": len(outcome.failed),
            "trials_killed": len(outcome.killed),
            "wall_seconds": summary["wall_seconds"],
        }
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec tune", description=__doc__.splitlines()[0])
    parser.add_argument("--lineage", required=True, help="ingest's lineage: JSON text, or a JSON file")
    parser.add_argument("--search-space", required=True, help="JSON: hyperparameter -> distribution")
    parser.add_argument("--max-evals", type=int, required=True)
    parser.add_argument("--parallelism", type=int, default=0, help="concurrent trials; 0: Spark task slots")
    parser.add_argument(
        "--train-params",
        required=True,
        help="JSON object: every training hyperparameter (the train component's defaults); trials start "
        "from it and replace what the search space samples",
    )
    parser.add_argument("--architecture", required=True, help="replaces train-params' (a run parameter)")
    parser.add_argument("--batch-size", type=int, required=True, help="replaces train-params'")
    parser.add_argument("--trial-epochs", type=int, default=1)
    parser.add_argument("--data-fraction", type=float, default=0.2, help="share of the rows each trial uses")
    parser.add_argument(
        "--validation-fraction", type=float, required=True, help="train's: tuning never scores on its rows"
    )
    parser.add_argument("--trial-timeout-s", type=float, default=900)
    parser.add_argument("--timeout-s", type=float, default=3600)
    parser.add_argument(
        "--early-stop-rounds", type=int, default=0, help="stop after N trials without progress"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("--best-params-out", type=Path, required=True)
    parser.add_argument("--summary-out", type=Path, required=True)
    parser.add_argument(
        "--executor-input", help="KFP's executor input ({{$}}), to publish the summary values"
    )
    return parser


SUMMARY_METRICS = ("trials", "succeeded", "failed", "killed", "best_val_recall_at_1", "wall_seconds")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    space = parse_space(args.search_space, "--search-space")
    base = TrainParams.parse(
        json_object(args.train_params, "--train-params")
        | {"architecture": args.architecture, "batch_size": args.batch_size},
        "--train-params",
    )
    from simrec.infra.spark import get_spark

    best, summary = tune(
        get_spark("simrec-tune"),
        read_lineage(args.lineage),
        space,
        max_evals=args.max_evals,
        parallelism=args.parallelism,
        base=base,
        trial_epochs=args.trial_epochs,
        data_fraction=args.data_fraction,
        validation_fraction=args.validation_fraction,
        trial_timeout_s=args.trial_timeout_s,
        timeout_s=args.timeout_s,
        early_stop_rounds=args.early_stop_rounds,
        seed=args.seed,
        experiment=args.experiment,
        git_sha=args.git_sha,
    )
    write_json_atomic(args.best_params_out, best)
    write_json_atomic(args.summary_out, summary)
    if args.executor_input:  # the Metrics artifact's scalars, which the KFP UI shows
        write_artifact_metadata(args.executor_input, {"summary": {k: summary[k] for k in SUMMARY_METRICS}})
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    report(
        f"{summary['trials']} trials ({summary['failed']} failed, {summary['killed']} killed) in "
        f"{summary['wall_seconds']:.0f} s: "
        f"best val recall@1 {summary['best_val_recall_at_1']:.4f} with "
        # four significant digits to read; best_params keeps the exact values train uses
        + json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in sorted(best.items())})
    )
