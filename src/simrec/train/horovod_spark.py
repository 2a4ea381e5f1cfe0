"""Training on the Spark session with Horovod: the training and validation rows of the lineage's table,
and the ranks run as Spark tasks with their input streamed through Petastorm."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from simrec.infra.errors import InputError
from simrec.records import Table
from simrec.train.data import Arrays, petastorm_source, read_table, split
from simrec.train.loop import TrainJob, run_training


@dataclass(frozen=True)
class TrainingRows:
    """The table's rows split for training: the training rows stay in Spark (Petastorm streams them),
    the validation rows are collected (every rank scores all of them)."""

    train: DataFrame
    train_rows: int
    validation: Arrays
    steps_per_epoch: int


def training_rows(
    spark: SparkSession,
    table: Table,
    *,
    validation_fraction: float,
    exclude_classes: tuple[int, ...],
    batch_size: int,
    workers: int,
) -> TrainingRows:
    """Items of `exclude_classes` are left out of training and validation; InputError when too few rows
    remain for one step of every rank, or for validation."""
    catalogue = read_table(spark, table)
    if exclude_classes:
        catalogue = catalogue.where(~F.col("label").isin(list(exclude_classes)))
    train_frame, validation_frame = split(catalogue, validation_fraction)
    validation = Arrays.collect(validation_frame)
    train_rows = train_frame.count()
    steps_per_epoch = train_rows // (batch_size * workers)
    if steps_per_epoch == 0 or len(validation) < 2:
        raise InputError(
            f"too little data: {train_rows} training and {len(validation)} validation rows for batch size "
            f"{batch_size} x {workers} workers"
        )
    return TrainingRows(train_frame, train_rows, validation, steps_per_epoch)


def _url(location: Path | str) -> str:
    return str(location) if "://" in str(location) else f"file://{Path(location).resolve()}"


def petastorm_input(
    spark: SparkSession, rows: TrainingRows, checkpoint_dir: Path, workers: int, batch_size: int, seed: int
) -> tuple[Any, Any]:
    """The training rows as a shard source (4 shards per rank) and its converter, which the caller
    deletes; Petastorm caches them under the checkpoint folder."""
    from petastorm.spark import SparkDatasetConverter

    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, _url(checkpoint_dir / "petastorm"))
    return petastorm_source(rows.train, 4 * workers, batch_size, seed)


def rank0_model_dir(spark: SparkSession, model_dir: Path, checkpoint_dir: Path) -> Path:
    """Where rank 0 saves the model. With executor pods (k8s:// master) it runs elsewhere than this task,
    so it saves to the checkpoint folder that both see (the claim), and the model is copied to the output
    here (copy_model)."""
    on_executors = not spark.sparkContext.master.startswith("local")
    return checkpoint_dir / "model" if on_executors else model_dir


def copy_model(rank0_dir: Path, model_dir: Path) -> None:
    if rank0_dir != model_dir:
        shutil.copytree(rank0_dir, model_dir, dirs_exist_ok=True)


def run_ranks(job: TrainJob, workers: int, converter: Any) -> list[dict[str, float]]:
    """Runs `workers` Horovod ranks (gloo) as Spark tasks; returns rank 0's history. The Petastorm
    converter is deleted however the ranks end."""
    import horovod.spark

    try:
        results = horovod.spark.run(
            run_training, args=(job, True), num_proc=workers, use_gloo=True, verbose=1
        )
    finally:
        converter.delete()
    return results[0]
