"""The hyperparameter search the tune step runs: Hyperopt TPE over SparkTrials, each trial a nested MLflow
run that trains single-process on the trial data and scores validation recall@1.

About 300 lines: the space, the objective run on Spark workers, and the outcome read back from MLflow
change together."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from pyspark.sql import SparkSession

from simrec.infra.errors import InputError
from simrec.records import Lineage
from simrec.train.data import Arrays, memory_source, read_table, sample, split
from simrec.train.loop import TrainJob, run_training
from simrec.train.params import TrainParams
from simrec.tune.space import SearchSpace

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


def hyperopt_point(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
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


def trial_data(
    spark: SparkSession, lineage: Lineage, validation_fraction: float, data_fraction: float, seed: int
) -> tuple[Arrays, Arrays]:
    """The rows every trial trains and scores on: `data_fraction` of train's training and validation
    splits (the same split train makes, so tuning never scores on rows train learns from)."""
    train_frame, validation_frame = split(read_table(spark, lineage.tables.train), validation_fraction)
    train = Arrays.collect(sample(train_frame, data_fraction, seed))
    validation = Arrays.collect(sample(validation_frame, data_fraction, seed))
    if len(validation) < 2:
        raise InputError(f"too little validation data for tuning: {len(validation)} rows")
    return train, validation


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
            recall = self._validation_recall(params, run_id, deadline=started + self.trial_timeout_s)
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

    def _validation_recall(self, params: TrainParams, run_id: str, deadline: float) -> float:
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
                    deadline=deadline,
                ),
                distributed=False,
            )
        assert history is not None
        return history[-1]["val_recall_at_1"]


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


def run_search(
    spark: SparkSession,
    objective: Objective,
    space: SearchSpace,
    *,
    max_evals: int,
    parallelism: int,
    timeout_s: float,
    early_stop_rounds: int,
    seed: int,
    first_points: list[dict[str, Any]] | None,
) -> Any:
    """Runs TPE's trials as Spark tasks; returns hyperopt's SparkTrials, finished or cancelled (by the
    overall timeout or early stopping)."""
    from hyperopt import SparkTrials, fmin, tpe
    from hyperopt.exceptions import AllTrialsFailed
    from hyperopt.fmin import generate_trial

    trials = SparkTrials(parallelism=parallelism, timeout=timeout_s, spark_session=spark)
    if first_points:
        # fmin's points_to_evaluate is silently ignored when a Trials object is passed (hyperopt 0.2.7
        # documents "only works if trials=None"), so the points go in as trials waiting to run.
        points = [hyperopt_point(space, p) for p in first_points]
        trials.insert_trial_docs([generate_trial(tid, point) for tid, point in enumerate(points)])
        trials.refresh()
    with contextlib.suppress(AllTrialsFailed):  # reported by search_outcome, with the trials' own errors
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
    return trials


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


@dataclass(frozen=True)
class SearchOutcome:
    """The finished trials' results, and what became of the others."""

    results: list[dict[str, Any]]  # the finished trials'
    succeeded: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    killed: list[str]  # MLflow run ids of the trials running when the search stopped
    cancelled: int
    stopped_by: str | None  # None, "fmin run timeout" or "early stopping condition"

    @property
    def best(self) -> dict[str, Any]:
        return min(self.succeeded, key=lambda r: r["loss"])


def search_outcome(spark: SparkSession, trials: Any, parent_run_id: str) -> SearchOutcome:
    """What the search came to, once cancelled trials have stopped and their runs are marked KILLED;
    InputError when no trial succeeded."""
    from hyperopt import STATUS_OK
    from hyperopt.base import JOB_STATE_DONE

    stopped_by = trials.fmin_cancelled_reason
    if stopped_by:
        wait_for_cancelled_tasks(spark)
    killed = kill_running_children(parent_run_id)
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
    return SearchOutcome(results, succeeded, failed, killed, trials.count_cancelled_trials(), stopped_by)


def search_summary(
    outcome: SearchOutcome, parent_run_id: str, parallelism: int, wall_seconds: float
) -> dict[str, Any]:
    """The tune step's summary output."""
    best = outcome.best
    return {
        "trials": len(outcome.results),
        "succeeded": len(outcome.succeeded),
        "failed": len(outcome.failed),
        "killed": len(outcome.killed),
        "cancelled": outcome.cancelled,
        "stopped_by": outcome.stopped_by,
        "killed_run_ids": outcome.killed,
        "failures": [{"params": r.get("params"), "error": r.get("error")} for r in outcome.failed],
        "best_val_recall_at_1": -best["loss"],
        "best_params": best["params"],
        "evaluated": [r["params"] for r in outcome.results],
        "best_trial_run_id": best["mlflow_run_id"],
        "parent_run_id": parent_run_id,
        "parallelism": parallelism,
        "wall_seconds": wall_seconds,
    }
