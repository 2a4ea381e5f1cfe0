"""Benchmark: train on the real Fashion-MNIST tables and report what the training issue asks for.

Run in the steps environment, e.g.
  .envs/steps/bin/python benchmarks/train.py --workers 2 --epochs 8 --architecture strong
Prints wall time, images/s per worker, validation recall@1, test recall@1 (each test image's nearest
train image by cosine has the same label), and the Petastorm reader's rows/s for one rank next to the
rate training consumes rows."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
from petastorm.spark import SparkDatasetConverter
from recall import test_recall_at_1

from simrec.infra.spark import get_spark
from simrec.steps.ingest import ingest
from simrec.steps.train import train
from simrec.train.data import petastorm_source, read_table, split
from simrec.train.params import TrainParams, train_component_defaults


def reader_rows_per_second(frame, batch_size: int, cache: Path, batches: int = 200) -> float:
    """Rows/s one rank's Petastorm shard delivers as decoded batches (size 1: the whole table)."""
    from simrec.train.data import training_batches

    source, converter = petastorm_source(frame, 4, batch_size, seed=0)
    try:
        with source(0, 1) as shard:
            stream = iter(training_batches(shard, augment=True, seed=0))
            next(stream)
            started = time.perf_counter()
            for _ in range(batches):
                next(stream)
            return batches * batch_size / (time.perf_counter() - started)
    finally:
        converter.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--lake", default=".simrec/lake")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", default="{}", help="TrainParams overrides as JSON")
    for name in ("epochs", "batch_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    parser.add_argument("--architecture")
    parser.add_argument("--loss")
    args = parser.parse_args()
    overrides = json.loads(args.params) | {
        k: v for k, v in vars(args).items() if k in ("epochs", "batch_size", "architecture", "loss") and v
    }
    params = TrainParams.component_defaults(**overrides)
    validation_fraction = train_component_defaults()["validation_fraction"]
    spark = get_spark("simrec-bench-train")
    lineage = ingest(spark, args.source, str(Path(args.lake).resolve()), checksums="official")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        summary = train(
            spark,
            lineage,
            params,
            Path(tmp) / "model",
            Path(tmp) / "ckpt",
            validation_fraction=validation_fraction,
            workers=args.workers,
        )
        test_recall = test_recall_at_1(spark, lineage, Path(tmp) / "model")
        spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{tmp}/petastorm")
        train_frame, _ = split(read_table(spark, lineage.tables.train), validation_fraction)
        reader_rate = reader_rows_per_second(train_frame, params.batch_size, Path(tmp))
    history = summary["history"]
    rates = [h["images_per_sec_per_worker"] for h in history[1:]] or [history[0]["images_per_sec_per_worker"]]
    consumption = float(np.mean(rates)) * args.workers
    print(f"params: {params.model_dump()}")
    print(f"workers: {args.workers}, epochs: {len(history)}, wall time: {summary['wall_seconds']:.0f} s")
    print(f"images/s per worker (mean of epochs after the first): {np.mean(rates):.0f}")
    print("val recall@1 by epoch: " + ", ".join(f"{h['val_recall_at_1']:.4f}" for h in history))
    print(f"test recall@1 (test -> train gallery, cosine): {test_recall:.4f}")
    print(f"Petastorm reader, one shard, decoded + augmented: {reader_rate:.0f} rows/s")
    print(
        f"training consumption, all workers: {consumption:.0f} rows/s -> reader/consumption "
        f"{reader_rate / consumption:.1f}x per rank-shard ({reader_rate * args.workers / consumption:.1f}x "
        f"with one reader per rank)"
    )
    spark.stop()


if __name__ == "__main__":
    main()
