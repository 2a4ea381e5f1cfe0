"""Train step: the metric-learning model with Horovod data parallelism on the Spark session, input
streamed from the exact Delta table version in the ingest lineage through Petastorm, tracked in MLflow.

Checkpoints every epoch; --resume continues from the last one (same MLflow run, continuous curves)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from simrec.data.fashion_mnist import format_classes, parse_classes
from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.plots import training_curves
from simrec.infra.progress import report
from simrec.records import Lineage, Table
from simrec.registry.tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.train.checkpoints import training_folder
from simrec.train.data import ShardSource
from simrec.train.horovod_spark import (
    TrainingRows,
    copy_model,
    petastorm_input,
    rank0_model_dir,
    run_ranks,
    training_rows,
)
from simrec.train.loop import EMBEDDING_MODEL_FILE, TrainJob
from simrec.train.params import TrainParams

log = logging.getLogger(__name__)
MLFLOW_RUN_FILE = "mlflow_run.json"
SUMMARY_FILE = "training.json"


def _check(validation_fraction: float, workers: int) -> None:
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")


def train(
    spark: SparkSession,
    lineage: Lineage,
    params: TrainParams,
    model_dir: Path,
    checkpoint_dir: Path,
    *,
    validation_fraction: float,
    workers: int = 1,
    resume: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    git_sha: str = "unknown",
    exclude_classes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Trains with `workers` Horovod ranks and returns the training summary (also written to model_dir).
    Items of `exclude_classes` are left out of training and validation (evaluate then measures how the
    model retrieves categories it never saw)."""
    _check(validation_fraction, workers)
    started = time.perf_counter()
    table = lineage.tables.train
    rows = training_rows(
        spark, table, validation_fraction=validation_fraction, exclude_classes=exclude_classes,
        batch_size=params.batch_size, workers=workers,
    )  # fmt: skip
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    source, converter = petastorm_input(spark, rows, checkpoint_dir, workers, params.batch_size, params.seed)
    rank0_dir = rank0_model_dir(spark, model_dir, checkpoint_dir)
    with _mlflow_run(experiment, checkpoint_dir, resume) as (run, resumed):
        if not resumed:
            mlflow.log_params(
                params.model_dump()
                | {
                    "workers": workers,
                    "validation_fraction": validation_fraction,
                    "exclude_classes": format_classes(exclude_classes),
                }
            )
            mlflow.set_tags(lineage_tags(lineage, git_sha) | {"simrec.step": "train"})
        log.info(
            "training on %d rows (%d steps/epoch x %d workers), validating on %d rows of %s@v%s",
            rows.train_rows, rows.steps_per_epoch, workers,
            len(rows.validation), table.uri, table.version,
        )  # fmt: skip
        job = _job(params, source, rows, checkpoint_dir, rank0_dir, resume, run.info.run_id, workers)
        history = run_ranks(job, workers, converter)
        copy_model(rank0_dir, model_dir)
        mlflow.log_artifact(str(model_dir / EMBEDDING_MODEL_FILE), artifact_path="model")
        mlflow.log_figure(training_curves(history), "training_curves.png")
        summary = _summary(run.info.run_id, params, workers, exclude_classes, rows, table, history, started)
        mlflow.log_metric("wall_seconds", summary["wall_seconds"])
    write_json_atomic(model_dir / SUMMARY_FILE, summary)
    return summary


@contextlib.contextmanager
def _mlflow_run(experiment: str, checkpoint_dir: Path, resume: bool) -> Iterator[tuple[Any, bool]]:
    """The training's MLflow run, and whether it is the one an earlier attempt started: a resumed
    training continues its run (one set of curves), found through the file the attempt left beside its
    checkpoints."""
    run_file = checkpoint_dir / MLFLOW_RUN_FILE
    resumed_run = json.loads(run_file.read_text())["run_id"] if resume and run_file.exists() else None
    with start_run(experiment, run_id=resumed_run, run_name=None if resumed_run else "train") as run:
        write_json_atomic(run_file, {"run_id": run.info.run_id})
        yield run, resumed_run is not None


def _job(
    params: TrainParams,
    source: ShardSource,
    rows: TrainingRows,
    checkpoint_dir: Path,
    rank0_dir: Path,
    resume: bool,
    run_id: str,
    workers: int,
) -> TrainJob:
    return TrainJob(
        params=params,
        source=source,
        steps_per_epoch=rows.steps_per_epoch,
        validation=rows.validation,
        checkpoint_dir=str(checkpoint_dir),
        model_dir=str(rank0_dir),
        resume=resume,
        mlflow_run_id=run_id,
        threads=max(1, (os.cpu_count() or 1) // workers),
        # Spark's Python workers keep the environment the session started with, so the store is
        # passed explicitly.
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
    )


def _summary(
    run_id: str,
    params: TrainParams,
    workers: int,
    exclude_classes: tuple[int, ...],
    rows: TrainingRows,
    table: Table,
    history: list[dict[str, float]],
    started: float,
) -> dict[str, Any]:
    return {
        "mlflow_run_id": run_id,
        "params": params.model_dump(),
        "workers": workers,
        "exclude_classes": list(exclude_classes),
        "train_rows": rows.train_rows,
        "validation_rows": len(rows.validation),
        "table": table.model_dump(mode="json"),
        "history": history,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec train", description=__doc__.splitlines()[0])
    parser.add_argument("--lineage", required=True, help="ingest's lineage: JSON text, or a JSON file")
    parser.add_argument("--best-params", type=Path, help="JSON of hyperparameters (tune's output) that win")
    # Required: their defaults live in components/train/component.yaml only, which passes every one.
    hyper = parser.add_argument_group("hyperparameters (defaults: components/train/component.yaml)")
    for name, spec in TrainParams.model_fields.items():
        kind = (
            _bool
            if spec.annotation is bool
            else (spec.annotation if spec.annotation in (int, float) else str)
        )
        hyper.add_argument(_flag(name), type=kind, required=True)
    parser.add_argument("--workers", type=int, default=1, help="Horovod ranks")
    parser.add_argument(
        "--validation-fraction", type=float, required=True, help="share of the train table held out"
    )
    parser.add_argument("--exclude-classes", default="", help="labels left out of training, e.g. 2,4,6")
    parser.add_argument(
        "--checkpoint-root",
        type=Path,
        required=True,
        help="checkpoints go to a subfolder named by the training's content (a retry resumes from it)",
    )
    parser.add_argument("--resume", type=_bool, default=False, help="continue from the last checkpoint")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("--model-out", type=Path, required=True, help="folder for the embedding model")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    values = {name: getattr(args, name) for name in TrainParams.model_fields}
    if args.best_params:
        values |= TrainParams.values_from_file(args.best_params)
    params = TrainParams.parse(values)
    lineage = read_lineage(args.lineage)
    exclude_classes = parse_classes(args.exclude_classes)
    checkpoint_dir = training_folder(
        args.checkpoint_root,
        lineage=lineage,
        params=params,
        workers=args.workers,
        validation_fraction=args.validation_fraction,
        exclude_classes=exclude_classes,
        git_sha=args.git_sha,
    )
    print(f"checkpoints: {checkpoint_dir}")
    from simrec.infra.spark import get_spark

    summary = train(
        get_spark("simrec-train"),
        lineage,
        params,
        args.model_out,
        checkpoint_dir,
        workers=args.workers,
        validation_fraction=args.validation_fraction,
        resume=args.resume,
        experiment=args.experiment,
        git_sha=args.git_sha,
        exclude_classes=exclude_classes,
    )
    last = summary["history"][-1]
    report(
        f"trained {len(summary['history'])} epochs: val recall@1 {last['val_recall_at_1']:.4f}, "
        f"MLflow run {summary['mlflow_run_id']}, model in {args.model_out}"
    )
