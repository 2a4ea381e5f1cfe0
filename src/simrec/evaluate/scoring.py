"""The candidate, raw pixels and the current champion scored alike on one catalogue: each model's vectors
come from the embeddings table (Spark batch embedding, at most once per model), each scorer's retrieval is
measured on the same test items against the same train gallery."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from simrec.embedding.embedder import pixel_vectors
from simrec.evaluate.catalogue_embeddings import embed_catalogue, read_vectors
from simrec.evaluate.gate import GATE_METRIC
from simrec.evaluate.measure import Catalogue, measure
from simrec.records import EmbeddingsTable, GateChampion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    model_id: str
    vectors: np.ndarray  # the candidate's, row i = the catalogue's item i
    embeddings: EmbeddingsTable  # the table version that holds every scored model's vectors
    results: dict[str, dict[str, Any]]  # scorer (model, pixels, champion) -> protocol -> measured
    champion: GateChampion | None
    embed_seconds: float  # the candidate's embedding

    @property
    def score(self) -> float:
        """The candidate's gate metric on all classes."""
        return self.results["model"]["all"]["metrics"][GATE_METRIC]


def _embed(
    spark: SparkSession, frame: DataFrame, catalogue: Catalogue, model_file: Path, embeddings_uri: str
) -> tuple[str, int, np.ndarray]:
    """(model id, embeddings table version, vectors in the catalogue's order)."""
    model_id, version = embed_catalogue(spark, frame, model_file, embeddings_uri)
    vectors = read_vectors(spark, embeddings_uri, model_id, version, catalogue.items["item_id"])
    return model_id, version, vectors


def score(
    spark: SparkSession,
    frame: DataFrame,
    catalogue: Catalogue,
    model_file: Path,
    embeddings_uri: str,
    champion: tuple[str, Path] | None,
    exclude_classes: tuple[int, ...] = (),
) -> Scored:
    """Scores the model in `model_file`, raw pixels, and `champion` ((version, model file), if any)."""
    timer = time.perf_counter()
    model_id, version, vectors = _embed(spark, frame, catalogue, model_file, embeddings_uri)
    embed_seconds = time.perf_counter() - timer
    log.info("embedded %d items in %.1f s (model %s)", len(vectors), embed_seconds, model_id[:12])
    results = {
        "model": measure(vectors, catalogue, exclude_classes),
        "pixels": measure(pixel_vectors(catalogue.pixels), catalogue, exclude_classes),
    }
    record = None
    if champion is not None:
        champion_version, champion_file = champion
        # `version` becomes the table's version after the champion's vectors: it holds both models'
        champion_id, version, champion_vectors = _embed(
            spark, frame, catalogue, champion_file, embeddings_uri
        )
        results["champion"] = measure(champion_vectors, catalogue, exclude_classes)
        record = GateChampion(
            version=champion_version,
            model_id=champion_id,
            recall_at_1=results["champion"]["all"]["metrics"][GATE_METRIC],
        )
    embeddings = EmbeddingsTable(uri=embeddings_uri, version=version)
    return Scored(model_id, vectors, embeddings, results, record, embed_seconds)


def flat_metrics(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{"recall_at_1": …, "pixels_recall_at_1": …, "unseen_recall_at_1": …, "champion_…": …}."""
    flat = {}
    for scorer, protocols in results.items():
        for protocol, measured in protocols.items():
            prefix = "" if scorer == "model" else f"{scorer}_"
            prefix += "" if protocol == "all" else f"{protocol}_"
            flat |= {f"{prefix}{name}": value for name, value in measured["metrics"].items()}
    return flat
