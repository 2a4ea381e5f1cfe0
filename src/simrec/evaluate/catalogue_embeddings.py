"""Batch scoring with Spark: every catalogue item's embedding, computed on the Spark workers (the model
loaded once per Python worker) and kept in the `embeddings` Delta table, keyed by model and item, so a
10M-item catalogue on a cluster runs the same code and a model's vectors are computed once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from delta.tables import DeltaTable
from pyspark import SparkFiles
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from simrec.data.lake import current_version
from simrec.embedding.embedder import file_sha256
from simrec.embedding.keras_model import EmbeddingModel

EMBEDDINGS_TABLE = "embeddings"
EMBEDDING_SCHEMA = StructType(
    [
        StructField("model_id", StringType(), False),  # SHA-256 of the embedding.keras that made it
        StructField("item_id", StringType(), False),
        StructField("vector", BinaryType(), False),  # little-endian float32: never a list of numbers
    ]
)
_worker_models: dict[str, EmbeddingModel] = {}  # per Python worker: load each model once


def _embed_partitions(model_file_name: str, model_id: str):
    def embed(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        if model_id not in _worker_models:
            _worker_models[model_id] = EmbeddingModel(Path(SparkFiles.get(model_file_name)))
        model = _worker_models[model_id]
        for batch in batches:
            vectors = model.embed_pngs(batch["image"].tolist())
            yield pd.DataFrame(
                {"model_id": model_id, "item_id": batch["item_id"], "vector": [v.tobytes() for v in vectors]}
            )

    return embed


def embed_catalogue(
    spark: SparkSession, catalogue: DataFrame, model_file: Path, table_uri: str, partitions: int = 8
) -> tuple[str, int]:
    """Adds the embeddings the table lacks for this model and these items (one Delta append); returns
    (model_id, table version). Unchanged model and items: nothing written, no new version."""
    model_id = file_sha256(model_file)
    todo = catalogue.select("item_id", "image")
    if DeltaTable.isDeltaTable(spark, table_uri):
        done = spark.read.format("delta").load(table_uri).where(F.col("model_id") == model_id)
        todo = todo.join(done.select("item_id"), "item_id", "left_anti")
    if todo.limit(1).count():
        # Workers get the model through Spark (local disk here, shipped to executors on a cluster), under
        # a name unique to the model so that two models in one session never collide.
        staging = Path(tempfile.mkdtemp(prefix="simrec-model-"))
        shipped = staging / f"{model_id}.keras"
        shutil.copyfile(model_file, shipped)
        spark.sparkContext.addFile(str(shipped))
        vectors = todo.repartition(partitions).mapInPandas(
            _embed_partitions(shipped.name, model_id), EMBEDDING_SCHEMA
        )
        vectors.write.format("delta").mode("append").partitionBy("model_id").save(table_uri)
    version = current_version(spark, table_uri)
    assert version is not None
    return model_id, version


def read_vectors(
    spark: SparkSession, table_uri: str, model_id: str, version: int, item_ids: pd.Series
) -> np.ndarray:
    """The model's vectors for item_ids, in that order ([n, dim] float32). Streamed to the driver a
    partition at a time into one array: collecting them at once (1M 569-d vectors are 2.3 GB) exceeds
    spark.driver.maxResultSize (1 GB by default) and holds every partition in the JVM as well."""
    rows = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(table_uri)
        .where(F.col("model_id") == model_id)
        .select("item_id", "vector")
    )
    position = {item_id: row for row, item_id in enumerate(item_ids.tolist())}
    found = np.zeros(len(item_ids), dtype=bool)
    vectors = np.empty((len(item_ids), 0), dtype=np.float32)
    for item_id, vector in rows.toLocalIterator(prefetchPartitions=True):
        if (row := position.get(item_id)) is None:
            continue  # an item this catalogue version does not hold
        if not vectors.shape[1]:
            vectors = np.empty((len(item_ids), len(vector) // 4), dtype=np.float32)
        vectors[row] = np.frombuffer(vector, dtype="<f4")
        found[row] = True
    if not found.all():
        missing = item_ids.iloc[int(np.flatnonzero(~found)[0])]
        raise RuntimeError(f"{table_uri}@v{version}: no embedding of {missing} for model {model_id}")
    return vectors
