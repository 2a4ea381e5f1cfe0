"""Catalogue Delta tables: idempotent, atomic appends of new items (MERGE on item_id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType, TimestampType

from simrec.errors import DataError

ITEM_SCHEMA = StructType(
    [
        StructField("item_id", StringType(), False),
        StructField("label", IntegerType(), False),
        StructField("label_name", StringType(), False),
        StructField("image", BinaryType(), False),  # PNG bytes: never a list of uint8 (see README)
        StructField("sha256", StringType(), False),
        StructField("source", StringType(), False),
        StructField("ingested_at", TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class TableState:
    uri: str
    version: int
    rows: int
    added: int

    def lineage(self) -> dict[str, object]:
        """What later steps record: which table and version; not how much this run added, so that an
        unchanged table gives identical lineage (and cache hits downstream)."""
        return {"uri": self.uri, "version": self.version, "rows": self.rows}


def table_uri(lake_uri: str, table: str) -> str:
    return f"{lake_uri.rstrip('/')}/{table}"


def current_version(spark: SparkSession, uri: str) -> int | None:
    if not DeltaTable.isDeltaTable(spark, uri):
        return None
    return int(DeltaTable.forPath(spark, uri).history(1).select("version").first()[0])


def _new_items(spark: SparkSession, uri: str, items: pd.DataFrame) -> pd.DataFrame:
    """The items not yet in the table; DataError if an existing id comes with different pixels."""
    existing = spark.read.format("delta").load(uri).select("item_id", "sha256").toPandas()
    joined = items[["item_id", "sha256"]].merge(existing, on="item_id", how="left", suffixes=("", "_old"))
    changed = joined[joined["sha256_old"].notna() & (joined["sha256_old"] != joined["sha256"])]
    if len(changed):
        raise DataError(
            f"{uri}: {len(changed)} item(s) already stored with different pixels, e.g. "
            f"{changed['item_id'].iloc[0]}; item ids are permanent, give changed images new ids"
        )
    return items[joined["sha256_old"].isna().to_numpy()]


@dataclass(frozen=True)
class AppendPlan:
    """What commit_append will add to one table: computed (and conflicts refused) before any write."""

    uri: str
    exists: bool
    new: pd.DataFrame


def plan_append(spark: SparkSession, uri: str, items: pd.DataFrame) -> AppendPlan:
    """The items the table lacks; DataError for duplicate ids or an existing id with different pixels."""
    if items["item_id"].duplicated().any():
        raise DataError(
            f"duplicate item_id in the input: {items['item_id'][items['item_id'].duplicated()].iloc[0]}"
        )
    exists = DeltaTable.isDeltaTable(spark, uri)
    return AppendPlan(uri=uri, exists=exists, new=_new_items(spark, uri, items) if exists else items)


def commit_append(spark: SparkSession, plan: AppendPlan) -> TableState:
    """Adds the planned items in one Delta commit; nothing planned, no new version. The MERGE inserts
    only ids still missing, so committing a plan again after a crash adds nothing twice."""
    uri, new = plan.uri, plan.new
    if len(new):
        frame = spark.createDataFrame(
            new.assign(ingested_at=datetime.now(UTC).replace(tzinfo=None)), schema=ITEM_SCHEMA
        )
        if plan.exists:
            (
                DeltaTable.forPath(spark, uri)
                .alias("t")
                .merge(frame.alias("s"), "t.item_id = s.item_id")
                .whenNotMatchedInsertAll()
                .execute()
            )
        else:
            frame.write.format("delta").mode("errorifexists").save(uri)
    version = current_version(spark, uri)
    assert version is not None
    rows = spark.read.format("delta").load(uri).select(F.count("*")).first()[0]
    return TableState(uri=uri, version=version, rows=int(rows), added=len(new))
