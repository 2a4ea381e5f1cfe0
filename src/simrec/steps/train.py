"""Train step: the metric-learning model with Horovod data parallelism on the Spark session, input
streamed from the exact Delta table version in the ingest lineage through Petastorm, tracked in MLflow.

Checkpoints every epoch; --resume continues from the last one (same MLflow run, continuous curves)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from simrec.data.fashion_mnist import format_classes, parse_classes
from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.plots import training_curves
from simrec.infra.progress import report
from simrec.registry.tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.train.checkpoints import training_folder
from simrec.train.data import Arrays, petastorm_source, read_table, split
from simrec.train.loop import EMBEDDING_MODEL_FILE, TrainJob, run_training
from simrec.train.params import TrainParams

log = logging.getLogger(__name__)
MLFLOW_RUN_FILE = "mlflow_run.json"
SUMMARY_FILE = "training.json"


def _url(location: Path | str) -> str:
    return str(location) if "://" in str(location) else f"file://{Path(location).resolve()}"


def train(
    spark: SparkSession,
    lineage: dict[str, Any],
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
    import horovod.spark
    from petastorm.spark import SparkDatasetConverter

    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation fraction must be between 0 and 1, got {validation_fraction}")
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    started = time.perf_counter()
    table = lineage["tables"]["train"]
    catalogue = read_table(spark, table)
    if exclude_classes:
        catalogue = catalogue.where(~F.col("label").isin(list(exclude_classes)))
    train_frame, validation_frame = split(catalogue, validation_fraction)
    validation = Arrays.collect(validation_frame)
    train_rows = train_frame.count()
    steps_per_epoch = train_rows // (params.batch_size * workers)
    if steps_per_epoch == 0 or len(validation) < 2:
        raise InputError(
            f"too little data: {train_rows} training and {len(validation)} validation rows for batch size "
            f"{params.batch_size} x {workers} workers"
        )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, _url(checkpoint_dir / "petastorm"))
    source, converter = petastorm_source(train_frame, 4 * workers, params.batch_size, params.seed)

    # Rank 0 saves the model. With executor pods (k8s:// master) it runs elsewhere than this task, so it
    # saves to the checkpoint folder that both see (the claim), and the model is copied to the output here.
    on_executors = not spark.sparkContext.master.startswith("local")
    rank0_model_dir = checkpoint_dir / "model" if on_executors else model_dir

    run_file = checkpoint_dir / MLFLOW_RUN_FILE
    resumed_run = json.loads(run_file.read_text())["run_id"] if resume and run_file.exists() else None
    with start_run(experiment, run_id=resumed_run, run_name=None if resumed_run else "train") as run:
        write_json_atomic(run_file, {"run_id": run.info.run_id})
        if not resumed_run:
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
            train_rows,
            steps_per_epoch,
            workers,
            len(validation),
            table["uri"],
            table["version"],
        )
        job = TrainJob(
            params=params,
            source=source,
            steps_per_epoch=steps_per_epoch,
            validation=validation,
            checkpoint_dir=str(checkpoint_dir),
            model_dir=str(rank0_model_dir),
            resume=resume,
            mlflow_run_id=run.info.run_id,
            threads=max(1, (os.cpu_count() or 1) // workers),
            # Spark's Python workers keep the environment the session started with, so the store is
            # passed explicitly.
            env={"TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
        )
        try:
            results = horovod.spark.run(
                run_training, args=(job, True), num_proc=workers, use_gloo=True, verbose=1
            )
        finally:
            converter.delete()
        if rank0_model_dir != model_dir:
            shutil.copytree(rank0_model_dir, model_dir, dirs_exist_ok=True)
        history = results[0]
        mlflow.log_artifact(str(model_dir / EMBEDDING_MODEL_FILE), artifact_path="model")
        mlflow.log_figure(training_curves(history), "training_curves.png")
        summary = {
            "mlflow_run_id": run.info.run_id,
            "params": params.model_dump(),
            "workers": workers,
            "exclude_classes": list(exclude_classes),
            "train_rows": train_rows,
            "validation_rows": len(validation),
            "table": table,
            "history": history,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        mlflow.log_metric("wall_seconds", summary["wall_seconds"])
    write_json_atomic(model_dir / SUMMARY_FILE, summary)
    return summary


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
