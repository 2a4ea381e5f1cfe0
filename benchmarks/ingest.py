"""Benchmark: ingest the real 70k Fashion-MNIST images into Delta, against plain Parquet of the same rows.

Run in the steps environment:  .envs/steps/bin/python benchmarks/ingest.py [--source DIR]
Prints seconds for a first ingest (read + verify + encode + Delta write), a re-ingest (no new version),
and a plain Parquet write of the same rows in the same Spark session."""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from simrec.data.catalogue import load_fashion_mnist
from simrec.data.fashion_mnist import OFFICIAL_SHA256
from simrec.data.lake import ITEM_SCHEMA
from simrec.spark import get_spark
from simrec.steps.ingest import ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    spark = get_spark("simrec-bench-ingest")
    spark.range(1).count()  # session and JVM warm before timing
    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        started = time.perf_counter()
        lineage = ingest(spark, args.source, str(lake), checksums="official")
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = ingest(spark, args.source, str(lake), checksums="official")
        rerun = time.perf_counter() - started
        assert again["tables"] == lineage["tables"]

        started = time.perf_counter()
        splits, _ = load_fashion_mnist(args.source, OFFICIAL_SHA256, Path(tmp))
        prepare = time.perf_counter() - started
        started = time.perf_counter()
        now = datetime.now(UTC).replace(tzinfo=None)
        for name, items in splits.items():
            frame = spark.createDataFrame(items.assign(ingested_at=now), schema=ITEM_SCHEMA)
            frame.write.parquet(str(Path(tmp) / "parquet" / name))
        parquet = time.perf_counter() - started
    rows = sum(t["rows"] for t in lineage["tables"].values())
    delta_write = first - prepare
    print(f"rows: {rows}")
    print(f"first ingest (read, verify, encode, Delta MERGE/write): {first:.1f} s")
    print(f"  of which read + verify + PNG-encode:                {prepare:.1f} s")
    print(f"  of which Delta write (first - prepare):              {delta_write:.1f} s")
    print(f"re-ingest, unchanged input (no new version):          {rerun:.1f} s")
    print(f"plain Parquet write of the same rows:                 {parquet:.1f} s")
    print(f"ratio first ingest / (prepare + Parquet write):       {first / (prepare + parquet):.2f}")
    print(f"ratio Delta write / Parquet write:                    {delta_write / parquet:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
