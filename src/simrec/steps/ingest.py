"""Ingest step: Fashion-MNIST (and optionally a new batch of items) into the catalogue's Delta tables.

Everything is read and validated, and both tables' changes are planned (conflicts refused), before the
first write; each table then changes in one atomic Delta commit, or not at all. Delta has no commit
across two tables: a process that dies between the two commits writes no lineage, and a re-run plans
only what is still missing (the train table's items are then already there) and completes it.
The lineage JSON names the exact table versions later steps must read.

An unchanged re-run is recognised from the input digests the tables' last commits record (see
simrec.data.lake): it re-reads and verifies the source files, encodes no image and starts no Spark."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession

from simrec.data.catalogue import Items, load_batch, load_fashion_mnist
from simrec.data.fashion_mnist import expected_checksums
from simrec.data.lake import commit_append, plan_append, table_uri
from simrec.infra.crash_points import crash_point
from simrec.infra.errors import InputError
from simrec.infra.progress import report
from simrec.records import Lineage, Tables, write_record

log = logging.getLogger(__name__)
BATCH_TABLES = ("train", "test")


def default_download_dir(lake_uri: str) -> Path:
    """Where downloaded IDX files are kept: beside a local lake; for an object-store lake (s3a://…) a local
    cache folder (XDG_CACHE_HOME, else the temp folder), never a local path named after the URI scheme."""
    if "://" not in lake_uri or lake_uri.startswith("file://"):
        return Path(lake_uri.removeprefix("file://")) / "_downloads"
    cache = os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir()
    return Path(cache) / "simrec" / "downloads"


def ingest(
    spark: SparkSession | Callable[[], SparkSession],
    source: str,
    lake_uri: str,
    checksums: str = "official",
    batch: Path | None = None,
    batch_table: str = "train",
    download_dir: Path | None = None,
) -> Lineage:
    """Writes the catalogue tables under lake_uri and returns the lineage record. `spark` may be a function
    that starts a session: it is called only if a table changes."""
    if batch_table not in BATCH_TABLES:
        raise InputError(f"batch table must be one of {BATCH_TABLES}, got {batch_table!r}")
    download_dir = download_dir or default_download_dir(lake_uri)
    splits, sources = load_fashion_mnist(source, expected_checksums(checksums), download_dir)
    inputs: dict[str, list[Items]] = {name: [items] for name, items in splits.items()}
    if batch is not None:
        batch_items = load_batch(batch)
        inputs[batch_table].append(batch_items)
        sources[f"batch:{batch.name}"] = {"path": str(batch), "items": str(len(batch_items))}
        if unlabelled := batch_items.unlabelled():
            sources[f"batch:{batch.name}"]["unlabelled"] = str(unlabelled)
    plans = {name: plan_append(table_uri(lake_uri, name), parts) for name, parts in inputs.items()}
    session = (lambda: spark) if isinstance(spark, SparkSession) else functools.cache(spark)
    if any(plan.changes for plan in plans.values()):
        session()  # started before the first commit, not between the two
    tables = {}
    for index, (name, plan) in enumerate(plans.items()):
        if index:
            crash_point("ingest:between-commits")
        state = commit_append(session, plan)
        log.info("table %s: version %d, %d rows (%d added)", name, state.version, state.rows, state.added)
        tables[name] = state.lineage()
    # No timestamps here: the lineage changes only when a table does, so downstream tasks stay cached.
    return Lineage(tables=Tables.model_validate(tables), sources=sources)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="folder with the four IDX files, or an http(s) URL")
    parser.add_argument("--lake-uri", required=True, help="root folder of the Delta tables")
    parser.add_argument(
        "--checksums", default="official", help="'official', 'none', or a JSON file of name -> sha256"
    )
    parser.add_argument(
        "--batch",
        type=lambda text: Path(text) if text else None,  # the pipeline always passes it: "" is no batch
        help="folder of new items: PNGs + labels.csv (empty label: unlabelled), or IDX images [+ labels]",
    )
    parser.add_argument("--batch-table", default="train", choices=BATCH_TABLES)
    parser.add_argument("--lineage-out", type=Path, required=True, help="where to write the lineage JSON")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from simrec.infra.spark import get_spark

    lineage = ingest(
        lambda: get_spark("simrec-ingest"),
        source=args.source,
        lake_uri=args.lake_uri,
        checksums=args.checksums,
        batch=args.batch,
        batch_table=args.batch_table,
    )
    write_record(args.lineage_out, lineage)
    print(lineage.tables.model_dump_json(indent=2))
    report(
        "tables " + ", ".join(f"{name} v{t.version} ({t.rows} rows)" for name, t in lineage.tables.items())
    )
