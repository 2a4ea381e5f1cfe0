"""Benchmark: ingest the real 70k Fashion-MNIST images into Delta, against plain Parquet of the same rows.

Run in the steps environment:
  PYTHONPATH=$PWD/src nice -n 5 .envs/steps/bin/python benchmarks/ingest.py [--source DIR] [--rounds N]

After a warm-up (a JVM's first Parquet and first Delta write, timed on a 10-row table), each round, in a
fresh folder, times a first ingest (read + verify + PNG-encode + Delta write, the step's own code) and the
same work done by hand with a plain Parquet write in the same Spark session; the order alternates between
rounds, so neither side always gets the warmer JVM. Then it times an unchanged re-ingest in this process
(no Spark session allowed), and as a fresh `simrec ingest` process (what a pipeline task pays, imports
included). Prints every round and the medians."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pyspark.sql import SparkSession

from simrec.data.catalogue import load_fashion_mnist
from simrec.data.fashion_mnist import OFFICIAL_SHA256
from simrec.data.lake import ITEM_SCHEMA
from simrec.infra.spark import get_spark
from simrec.steps.ingest import ingest

T = TypeVar("T")


def timed(run: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def parquet(spark: SparkSession, source: str, folder: Path) -> None:
    """What a first ingest does, by hand, with a plain Parquet write instead of Delta."""
    splits, _ = load_fashion_mnist(source, OFFICIAL_SHA256, folder / "downloads")
    now = datetime.now(UTC).replace(tzinfo=None)
    for name, items in splits.items():
        frame = spark.createDataFrame(items.encoded().assign(ingested_at=now), schema=ITEM_SCHEMA)
        frame.write.parquet(str(folder / "parquet" / name))


def no_spark() -> SparkSession:
    raise AssertionError("an unchanged re-ingest asked for a Spark session")


def one_round(spark: SparkSession, source: str, delta_first: bool) -> tuple[dict[str, float], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lake = str(folder / "lake")
        seconds: dict[str, float] = {}
        for side in ("delta", "parquet") if delta_first else ("parquet", "delta"):
            if side == "delta":
                seconds["delta"], lineage = timed(lambda: ingest(spark, source, lake, checksums="official"))
            else:
                seconds["parquet"], _ = timed(lambda: parquet(spark, source, folder))
        seconds["unchanged"], again = timed(lambda: ingest(no_spark, source, lake, checksums="official"))
        assert again.tables == lineage.tables, (again, lineage)
        command = [str(Path(sys.executable).parent / "simrec"), "ingest", "--source", source]
        command += ["--lake-uri", lake, "--lineage-out", str(folder / "lineage.json")]
        seconds["unchanged_process"], _ = timed(lambda: subprocess.run(command, check=True))
        ratio = seconds["delta"] / seconds["parquet"]
        print(
            f"{'Delta first' if delta_first else 'Parquet first'}: Delta ingest {seconds['delta']:.1f} s, "
            f"Parquet {seconds['parquet']:.1f} s ({ratio:.2f}x); unchanged re-ingest "
            f"{seconds['unchanged']:.1f} s here, {seconds['unchanged_process']:.1f} s as a new process",
            flush=True,
        )
        return seconds, lineage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    spark = get_spark("simrec-bench-ingest")
    spark.range(1).count()  # the session itself is not what is measured
    # A JVM's first write (any format) costs seconds of class loading and code generation, and Delta's
    # first use costs more on top: paid here on a tiny table, Parquet first, so no round carries it.
    with tempfile.TemporaryDirectory() as tmp:
        tiny = spark.range(10)
        first_parquet, _ = timed(lambda: tiny.write.parquet(f"{tmp}/parquet"))
        first_delta, _ = timed(lambda: tiny.write.format("delta").save(f"{tmp}/delta"))
    print(
        f"warm-up, a 10-row table: first Parquet write {first_parquet:.1f} s, then first Delta write "
        f"{first_delta:.1f} s (what a fresh `simrec ingest` process pays on top of a round's figure)"
    )
    rounds = [one_round(spark, args.source, delta_first=r % 2 == 0) for r in range(args.rounds)]
    median = {key: statistics.median(s[key] for s, _ in rounds) for key in rounds[0][0]}
    lineage = rounds[0][1]
    rows = sum(table.rows or 0 for _, table in lineage.tables.items())
    print(f"rows: {rows}, rounds: {args.rounds}, medians:")
    print(f"  first ingest: read + verify + encode + Delta write   {median['delta']:.1f} s")
    print(f"  the same with a plain Parquet write                 {median['parquet']:.1f} s")
    print(f"  ratio Delta / Parquet                               {median['delta'] / median['parquet']:.2f}")
    print(f"  unchanged re-ingest in this process                 {median['unchanged']:.1f} s")
    print(f"  unchanged re-ingest as a new `simrec ingest` process {median['unchanged_process']:.1f} s")
    spark.stop()


if __name__ == "__main__":
    main()
