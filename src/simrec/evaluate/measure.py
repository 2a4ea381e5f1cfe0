"""How well a model's vectors retrieve the catalogue: test items as queries against the train gallery
(all classes, and the classes left out of training alone), and what the approximate index loses against
exact search. Used by the evaluate step and the quality benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from simrec.data.codec import decode_png
from simrec.data.fashion_mnist import UNLABELLED
from simrec.data.lake import read_version
from simrec.records import Lineage
from simrec.retrieval.exact import per_class_recall, retrieval_metrics, top_k
from simrec.retrieval.index import search

ANN_TIMING_QUERIES = 1000


@dataclass(frozen=True)
class Catalogue:
    """Every item of the lineage's tables, in one order: metadata, decoded pixels, which table."""

    items: pd.DataFrame  # item_id, label (Int32, <NA>: unlabelled), label_name, image (PNG), table
    pixels: np.ndarray  # [n, 28, 28] uint8

    @classmethod
    def collect(cls, frame: DataFrame) -> Catalogue:
        items = frame.orderBy("table", "item_id").toPandas()
        items["label"] = items["label"].astype("Int32")  # not float when unlabelled items make it nullable
        return cls(items, np.stack([decode_png(png) for png in items["image"]]))

    @property
    def labels(self) -> np.ndarray:
        """Each item's class, UNLABELLED for an unlabelled item (equal to no class)."""
        return self.items["label"].fillna(UNLABELLED).to_numpy(dtype=np.int64)

    def where(self, table: str, labels: tuple[int, ...] = ()) -> np.ndarray:
        """Rows of the table's labelled items (of `labels` only, when given). Retrieval is measured with
        labels, so unlabelled items are neither queries nor gallery; the index still holds them."""
        chosen = (self.items["table"].to_numpy() == table) & self.items["label"].notna().to_numpy()
        if labels:
            chosen &= self.items["label"].isin(labels).to_numpy()
        return np.flatnonzero(chosen)


def catalogue_frame(spark: SparkSession, lineage: Lineage) -> DataFrame:
    frames = [
        read_version(spark, table)
        .select("item_id", F.col("label").cast("int").alias("label"), "label_name", "image")
        .withColumn("table", F.lit(name))
        for name, table in sorted(lineage.tables.items())
    ]
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return frame


def _scores(
    queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[dict[str, float], dict[int, float]]:
    neighbours = top_k(queries, gallery, 10)
    return (
        retrieval_metrics(neighbours, query_labels, gallery_labels),
        per_class_recall(neighbours, query_labels, gallery_labels),
    )


def measure(
    vectors: np.ndarray, catalogue: Catalogue, exclude_classes: tuple[int, ...]
) -> dict[str, dict[str, Any]]:
    """Test items as queries against the train gallery: on all classes, and on the excluded (unseen)
    classes alone when there are any."""
    labels = catalogue.labels
    protocols = {"all": ()} | ({"unseen": exclude_classes} if exclude_classes else {})
    results = {}
    for protocol, classes in protocols.items():
        queries, gallery = catalogue.where("test", classes), catalogue.where("train", classes)
        metrics, per_class = _scores(vectors[queries], vectors[gallery], labels[queries], labels[gallery])
        results[protocol] = {"metrics": metrics, "per_class_recall_at_1": per_class}
    return results


def ann_quality(index, vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """What the approximate index loses against exact search over the same whole catalogue (each query's
    own item left out): label recall@10 both ways, overlap of the top-10 lists, query times."""
    started = time.perf_counter()
    _, ann_rows = search(index, vectors[queries], 11)
    ann_seconds = time.perf_counter() - started
    started = time.perf_counter()
    exact_rows = top_k(vectors[queries], vectors, 11)
    exact_seconds = time.perf_counter() - started
    found = []
    for ann, exact, own in zip(ann_rows, exact_rows, queries, strict=True):
        found.append(([r for r in ann if r != own][:10], [r for r in exact if r != own][:10]))
    ann_top = np.array([a for a, _ in found])
    exact_top = np.array([e for _, e in found])
    query_labels = labels[queries]
    single = vectors[queries[:ANN_TIMING_QUERIES]]
    started = time.perf_counter()
    for vector in single:
        search(index, vector[None], 10)
    one_query_ms = 1000 * (time.perf_counter() - started) / len(single)
    ann_recall = float(np.mean((labels[ann_top] == query_labels[:, None]).any(axis=1)))
    exact_recall = float(np.mean((labels[exact_top] == query_labels[:, None]).any(axis=1)))
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann_top, exact_top, strict=True)])
    return {
        "ann_recall_at_10": ann_recall,
        "exact_recall_at_10": exact_recall,
        "ann_recall_loss_at_10": exact_recall - ann_recall,
        "ann_neighbour_overlap_at_10": float(overlap),
        "ann_ms_per_query_batched": 1000 * ann_seconds / len(queries),
        "exact_ms_per_query_batched": 1000 * exact_seconds / len(queries),
        "ann_ms_per_single_query": one_query_ms,
    }
