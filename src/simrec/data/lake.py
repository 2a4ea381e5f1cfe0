"""Catalogue Delta tables: idempotent, atomic appends of new items (MERGE on item_id).

Writes go through Spark. The log is read with delta-rs (version, row count, existing ids, what earlier
ingests recorded): milliseconds and no Spark session, where Spark's snapshot, history and count jobs took
seconds each. Every commit records in its userMetadata the digests of the inputs whose items the table
then holds in full, in the same atomic commit as the rows; an ingest whose inputs the last commit already
records has nothing to write and reads nothing more. A commit by anyone else records nothing, so the next
ingest compares item by item again."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType, TimestampType

from simrec.data.catalogue import Items
from simrec.infra.errors import DataError
from simrec.records import Table

ITEM_SCHEMA = StructType(
    [
        StructField("item_id", StringType(), False),
        # null: an unlabelled item. (Spark's writer stores every column nullable anyway, so tables made
        # when this said False take unlabelled items as they are.)
        StructField("label", IntegerType(), True),
        StructField("label_name", StringType(), True),
        StructField("image", BinaryType(), False),  # PNG bytes: never a list of uint8 (see README)
        StructField("sha256", StringType(), False),
        StructField("source", StringType(), False),
        StructField("ingested_at", TimestampType(), False),
    ]
)
INPUTS_KEY = "simrec.ingest.inputs"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class TableState:
    uri: str
    version: int
    rows: int
    added: int

    def lineage(self) -> Table:
        """What later steps record: which table and version; not how much this run added, so that an
        unchanged table gives identical lineage (and cache hits downstream)."""
        return Table(uri=self.uri, version=self.version, rows=self.rows)


@dataclass(frozen=True)
class LogState:
    """A table's latest version as its log says, read without Spark."""

    version: int
    rows: int
    inputs: frozenset[str]  # input digests the last commit records (none if an ingest did not make it)


def table_uri(lake_uri: str, table: str) -> str:
    return f"{lake_uri.rstrip('/')}/{table}"


def read_version(spark: SparkSession, table: Table) -> DataFrame:
    """The table exactly at the version the lineage names (Delta time travel)."""
    return spark.read.format("delta").option("versionAsOf", table.version).load(table.uri)


def current_version(spark: SparkSession, uri: str) -> int | None:
    if not DeltaTable.isDeltaTable(spark, uri):
        return None
    return int(DeltaTable.forPath(spark, uri).history(1).select("version").first()[0])


def _open(uri: str):
    from deltalake import DeltaTable as LogTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return LogTable(uri)
    except TableNotFoundError:
        return None


def read_log(uri: str) -> LogState | None:
    """The table's version, row count and recorded inputs; None if there is no table yet."""
    table = _open(uri)
    if table is None:
        return None
    try:
        metadata = json.loads(table.history(1)[0].get("userMetadata") or "{}")
    except json.JSONDecodeError:  # someone else's free-text metadata
        metadata = {}
    recorded = metadata.get(INPUTS_KEY, []) if isinstance(metadata, dict) else []
    return LogState(
        version=table.version(),
        rows=table.to_pyarrow_dataset().count_rows(),
        inputs=frozenset(recorded),
    )


@dataclass(frozen=True)
class AppendPlan:
    """What commit_append will add to one table: computed (and conflicts refused) before any write."""

    uri: str
    log: LogState | None  # None: the table does not exist yet
    items: Items
    new: np.ndarray  # rows of `items` the table lacks
    inputs: frozenset[str]  # the digests the commit records

    @property
    def changes(self) -> bool:
        return self.log is None or len(self.new) > 0


def plan_append(uri: str, inputs: list[Items]) -> AppendPlan:
    """The items of `inputs` the table lacks; DataError for duplicate ids or an existing id with different
    pixels. Inputs the last commit records are not compared again: their items are all there."""
    items = Items.concat(inputs)
    if items.meta["item_id"].duplicated().any():
        duplicate = items.meta["item_id"][items.meta["item_id"].duplicated()].iloc[0]
        raise DataError(f"duplicate item_id in the input: {duplicate}")
    digests = frozenset(part.digest() for part in inputs)
    log = read_log(uri)
    if log is None:
        return AppendPlan(uri, None, items, np.arange(len(items)), digests)
    if digests <= log.inputs:
        return AppendPlan(uri, log, items, np.arange(0), log.inputs)
    return AppendPlan(uri, log, items, _new_rows(uri, items), log.inputs | digests)


def _new_rows(uri: str, items: Items) -> np.ndarray:
    """Rows of the items not yet in the table; DataError if an existing id comes with different pixels."""
    table = _open(uri)
    assert table is not None
    existing = table.to_pyarrow_table(columns=["item_id", "sha256"]).to_pandas()
    joined = items.meta[["item_id", "sha256"]].merge(
        existing, on="item_id", how="left", suffixes=("", "_old")
    )
    changed = joined[joined["sha256_old"].notna() & (joined["sha256_old"] != joined["sha256"])]
    if len(changed):
        raise DataError(
            f"{uri}: {len(changed)} item(s) already stored with different pixels, e.g. "
            f"{changed['item_id'].iloc[0]}; item ids are permanent, give changed images new ids"
        )
    return np.flatnonzero(joined["sha256_old"].isna().to_numpy())


def commit_append(session: Callable[[], SparkSession], plan: AppendPlan) -> TableState:
    """Adds the planned items in one Delta commit that also records the plan's inputs; nothing planned,
    no new version (and no Spark session asked for). The MERGE inserts only ids still missing, so
    committing a plan again after a crash adds nothing twice."""
    uri = plan.uri
    if not plan.changes:
        assert plan.log is not None
        return TableState(uri=uri, version=plan.log.version, rows=plan.log.rows, added=0)
    new = plan.items.encoded(plan.new)
    spark = session()
    frame = spark.createDataFrame(
        new.assign(ingested_at=datetime.now(UTC).replace(tzinfo=None)), schema=ITEM_SCHEMA
    )
    spark.conf.set(USER_METADATA_CONF, json.dumps({INPUTS_KEY: sorted(plan.inputs)}))
    try:
        if plan.log is None:
            frame.write.format("delta").mode("errorifexists").save(uri)
        else:
            (
                DeltaTable.forPath(spark, uri)
                .alias("t")
                .merge(frame.alias("s"), "t.item_id = s.item_id")
                .whenNotMatchedInsertAll()
                .execute()
            )
    finally:
        spark.conf.unset(USER_METADATA_CONF)
    log = read_log(uri)
    assert log is not None
    return TableState(uri=uri, version=log.version, rows=log.rows, added=len(new))
