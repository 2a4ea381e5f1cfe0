"""Tune step: Hyperopt TPE over SparkTrials (trials in parallel as Spark tasks), each trial a nested
MLflow run that trains single-process on a fraction of the training split and scores validation
recall@1. Writes the best hyperparameters for the train step and a summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from pyspark.sql import SparkSession

from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.kfp_output import write_artifact_metadata
from simrec.infra.plots import trial_scores
from simrec.infra.progress import report
from simrec.registry.tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.train.data import Arrays, memory_source, read_table, sample, split
from simrec.train.loop import TrainJob, run_training
from simrec.train.params import TrainParams, json_object
from simrec.tune.space import SearchSpace, parse_space, space_json

log = logging.getLogger(__name__)


def hyperopt_space(space: SearchSpace) -> dict[str, Any]:
    from hyperopt import hp

    expressions = {}
    for name, dim in space.items():
        if dim.dist == "choice":
            expressions[name] = hp.choice(name, dim.options)
        elif dim.dist == "uniform":
            expressions[name] = hp.uniform(name, dim.low, dim.high)
        elif dim.dist == "loguniform":
            expressions[name] = hp.loguniform(name, math.log(dim.low), math.log(dim.high))
        else:
            expressions[name] = hp.quniform(name, dim.low, dim.high, dim.q)
    return expressions


def _hyperopt_point(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """A configuration as hyperopt's points_to_evaluate wants it: choices by index."""
    if set(values) != set(space):
        raise InputError(f"a first point must set exactly {sorted(space)}, got {sorted(values)}")
    point = {}
    for name, dim in space.items():
        if dim.dist != "choice":
            point[name] = values[name]
            continue
        if values[name] not in dim.options:
            raise InputError(f"first point: {name}={values[name]!r} is not one of {dim.options}")
        point[name] = dim.options.index(values[name])
    return point


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperopt samples floats (and numpy scalars); TrainParams wants its own types."""
    typed = {}
    for name, value in values.items():
        value = value.item() if isinstance(value, np.generic) else value
        typed[name] = round(value) if TrainParams.model_fields[name].annotation is int else value
    return typed


class Objective:
    """One trial: train on the sampled parameters, return -validation recall@1 (hyperopt minimises)."""

    def __init__(
        self,
        base: TrainParams,
        train: Arrays,
        validation: Arrays,
        parent_run_id: str,
        experiment_id: str,
        tracking_uri: str,
        trial_timeout_s: float,
        threads: int,
    ) -> None:
        self.base, self.train, self.validation = base, train, validation
        self.parent_run_id, self.experiment_id, self.tracking_uri = parent_run_id, experiment_id, tracking_uri
        self.trial_timeout_s, self.threads = trial_timeout_s, threads

    def __call__(self, sampled: dict[str, Any]) -> dict[str, Any]:
        from hyperopt import STATUS_FAIL, STATUS_OK

        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        values = _typed(sampled)
        client = mlflow.MlflowClient(self.tracking_uri)
        run = client.create_run(
            self.experiment_id,
            run_name="trial",
            tags={"mlflow.parentRunId": self.parent_run_id, "simrec.step": "tune"},
        )
        run_id = run.info.run_id
        started = time.time()
        try:
            params = TrainParams.parse(self.base.model_dump() | values, "trial parameters")
            for name, value in params.model_dump().items():
                client.log_param(run_id, name, value)
            steps = len(self.train) // params.batch_size
            if steps == 0:
                raise InputError(f"batch size {params.batch_size} exceeds the {len(self.train)} trial rows")
            with tempfile.TemporaryDirectory() as scratch:
                history = run_training(
                    TrainJob(
                        params=params,
                        source=memory_source(self.train, params.batch_size, params.seed),
                        steps_per_epoch=steps,
                        validation=self.validation,
                        checkpoint_dir=scratch,
                        model_dir=scratch,
                        mlflow_run_id=run_id,
                        threads=self.threads,
                        deadline=started + self.trial_timeout_s,
                    ),
                    distributed=False,
                )
            assert history is not None
            recall = history[-1]["val_recall_at_1"]
            client.set_terminated(run_id, "FINISHED")
            return {
                "loss": -recall,
                "status": STATUS_OK,
                "params": values,
                "mlflow_run_id": run_id,
                "seconds": time.time() - started,
            }
        except Exception as exc:  # a failed trial is recorded and the search goes on
            error = f"{exc.__class__.__name__}: {exc}"
            client.set_tag(run_id, "simrec.error", error[:5000])
            client.set_terminated(run_id, "FAILED")
            return {"status": STATUS_FAIL, "error": error, "params": values, "mlflow_run_id": run_id}


def no_better_for(rounds: int) -> Any:
    """Hyperopt early_stop_fn: stop once `rounds` successful trials, in the order they finished, have not
    beaten the best loss before them. Hyperopt's no_progress_loss reads the newest trial's loss, which
    under SparkTrials may be a running trial's or a failed one's (no loss), and SparkTrials calls the
    function once per poll however many trials finished, so this one looks at all finished trials."""
    from hyperopt import STATUS_OK

    def stop(trials: Any, *_: Any) -> tuple[bool, list[Any]]:
        finished = sorted(
            (t for t in trials.trials if t["result"].get("status") == STATUS_OK),
            key=lambda t: t["refresh_time"],
        )
        best, since_best = math.inf, 0
        for trial in finished:
            if trial["result"]["loss"] < best:
                best, since_best = trial["result"]["loss"], 0
            else:
                since_best += 1
        return since_best >= rounds, []

    return stop


def wait_for_cancelled_tasks(spark: SparkSession, timeout_s: float = 60) -> None:
    """fmin returns as soon as SparkTrials cancels its jobs, but Spark kills a cancelled task's Python
    worker only seconds later, and until then the trial may still create or write its MLflow run."""
    tracker = spark.sparkContext._jsc.sc().statusTracker()  # executor infos are not in PySpark's API
    deadline = time.monotonic() + timeout_s
    while sum(e.numRunningTasks() for e in tracker.getExecutorInfos()) > 0:
        if time.monotonic() > deadline:
            log.warning("cancelled trials still running after %.0f s", timeout_s)
            return
        time.sleep(0.5)


def kill_running_children(parent_run_id: str) -> list[str]:
    """Marks KILLED the nested trial runs still RUNNING once the search is over: trials the overall timeout
    or early stopping cancelled (SparkTrials cancels their Spark job, so the trial never records an end)."""
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    running = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in running:
        client.set_tag(run.info.run_id, "simrec.error", "cancelled: the search stopped while it ran")
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in running]


def tune(
    spark: SparkSession,
    lineage: dict[str, Any],
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
    from hyperopt import STATUS_OK, SparkTrials, fmin, tpe
    from hyperopt.base import JOB_STATE_DONE
    from hyperopt.exceptions import AllTrialsFailed
    from hyperopt.fmin import generate_trial

    if max_evals < 1:
        raise InputError(f"max_evals must be at least 1, got {max_evals}")
    if not 0.0 < data_fraction <= 1.0:
        raise InputError(f"data fraction must be in (0, 1], got {data_fraction}")
    started = time.perf_counter()
    base = base.model_copy(update={"epochs": trial_epochs, "seed": seed})
    parallelism = parallelism or spark.sparkContext.defaultParallelism
    train_frame, validation_frame = split(read_table(spark, lineage["tables"]["train"]), validation_fraction)
    train = Arrays.collect(sample(train_frame, data_fraction, seed))
    validation = Arrays.collect(sample(validation_frame, data_fraction, seed))
    if len(validation) < 2:
        raise InputError(f"too little validation data for tuning: {len(validation)} rows")
    log.info(
        "tuning: %d evaluations, parallelism %d, %d train / %d validation rows per trial",
        max_evals,
        parallelism,
        len(train),
        len(validation),
    )
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
        objective = Objective(
            base,
            train,
            validation,
            parent.info.run_id,
            parent.info.experiment_id,
            mlflow.get_tracking_uri(),
            trial_timeout_s,
            threads=max(1, (os.cpu_count() or 1) // parallelism),
        )
        trials = SparkTrials(parallelism=parallelism, timeout=timeout_s, spark_session=spark)
        if first_points:
            # fmin's points_to_evaluate is silently ignored when a Trials object is passed (hyperopt 0.2.7
            # documents "only works if trials=None"), so the points go in as trials waiting to run.
            points = [_hyperopt_point(space, p) for p in first_points]
            trials.insert_trial_docs([generate_trial(tid, point) for tid, point in enumerate(points)])
            trials.refresh()
        with contextlib.suppress(AllTrialsFailed):  # reported below, with the trials' own errors
            fmin(
                objective,
                hyperopt_space(space),
                algo=tpe.suggest,
                max_evals=max_evals,
                trials=trials,
                rstate=np.random.default_rng(seed),
                early_stop_fn=no_better_for(early_stop_rounds) if early_stop_rounds else None,
                show_progressbar=False,
                return_argmin=False,
            )
        stopped_by = trials.fmin_cancelled_reason  # None, "fmin run timeout" or "early stopping condition"
        if stopped_by:
            wait_for_cancelled_tasks(spark)
        killed = kill_running_children(parent.info.run_id)
        # Cancelled trials have no result (one that finished as the search was cancelled is cancelled too:
        # hyperopt drops its result) and trials.trials leaves them out; one never started has no MLflow run.
        results = [t["result"] for t in trials.trials if t["state"] == JOB_STATE_DONE]
        succeeded = [r for r in results if r.get("status") == STATUS_OK]
        failed = [r for r in results if r.get("status") != STATUS_OK]
        if not succeeded:
            first = f"; the first: {failed[0].get('error', 'no result')}" if failed else ""
            if stopped_by:
                raise InputError(
                    f"no tuning trial succeeded: {len(failed)} failed, {len(killed)} killed when the search "
                    f"stopped ({stopped_by}){first}"
                )
            raise InputError(f"all {len(results)} tuning trials failed{first}")
        best = min(succeeded, key=lambda r: r["loss"])
        mlflow.MlflowClient().set_tag(best["mlflow_run_id"], "simrec.best_trial", "true")
        summary = {
            "trials": len(results),
            "succeeded": len(succeeded),
            "failed": len(failed),
            "killed": len(killed),
            "cancelled": trials.count_cancelled_trials(),
            "stopped_by": stopped_by,
            "killed_run_ids": killed,
            "failures": [{"params": r.get("params"), "error": r.get("error")} for r in failed],
            "best_val_recall_at_1": -best["loss"],
            "best_params": best["params"],
            "evaluated": [r["params"] for r in results],
            "best_trial_run_id": best["mlflow_run_id"],
            "parent_run_id": parent.info.run_id,
            "parallelism": parallelism,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        mlflow.log_figure(trial_scores(results), "trials.png")
        mlflow.log_metrics(
            {
                "best_val_recall_at_1": summary["best_val_recall_at_1"],
                "trials_failed": len(failed),
                "trials_killed": len(killed),
                "wall_seconds": summary["wall_seconds"],
            }
        )
    return best["params"], summary


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
