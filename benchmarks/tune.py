"""Benchmark: the tune step on the real tables with the embedded profile's search, at parallelism 2 and 1.

Run in the steps environment (after an ingest, e.g. `simrec run`):
  .envs/steps/bin/python benchmarks/tune.py [--max-evals 4]
The parallelism-1 search evaluates exactly the configurations the parallelism-2 search tried (as first
points), so the wall-time ratio is the speed-up of running trials in parallel on Spark."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow

from simrec.config import load_config
from simrec.infra.spark import get_spark
from simrec.steps.ingest import ingest
from simrec.steps.tune import tune
from simrec.train.params import TrainParams, train_component_defaults
from simrec.tune.space import parse_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-evals", type=int)
    args = parser.parse_args()
    config = load_config("embedded")
    max_evals = args.max_evals or config.tune.max_evals
    spark = get_spark("simrec-bench-tune")
    lineage = ingest(spark, config.ingest.source, config.storage.lake_uri, checksums=config.ingest.checksums)
    base = TrainParams.component_defaults()  # the embedded profile sets no training hyperparameter
    validation_fraction = train_component_defaults()["validation_fraction"]
    space = parse_space(config.tune.space)
    summaries, configurations = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        for parallelism in (2, 1):
            best, summary = tune(
                spark,
                lineage,
                space,
                max_evals=max_evals,
                parallelism=parallelism,
                base=base,
                validation_fraction=validation_fraction,
                trial_epochs=config.tune.trial_epochs,
                data_fraction=config.tune.data_fraction,
                first_points=configurations,
            )
            configurations = configurations or summary["evaluated"]
            assert summary["evaluated"] == configurations, (
                "the two searches evaluated different configurations"
            )
            summaries[parallelism] = summary
            print(
                f"parallelism {parallelism}: {summary['trials']} evaluations ({summary['failed']} failed), "
                f"wall {summary['wall_seconds']:.0f} s, "
                f"best val recall@1 {summary['best_val_recall_at_1']:.4f}, best {best}"
            )
    speed_up = summaries[1]["wall_seconds"] / summaries[2]["wall_seconds"]
    print(f"speed-up of parallelism 2 over 1: {speed_up:.2f}x")
    spark.stop()


if __name__ == "__main__":
    main()
