"""The candidate as a recommender package: its nearest-neighbour index built and measured against exact
search, the catalogue's vectors published to a vector engine when one is given, then the package written
around that same index, with the ONNX model that will serve checked against Keras's vectors (a package
whose ONNX model disagrees is never built)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simrec.evaluate.measure import Catalogue, ann_quality
from simrec.infra import progress
from simrec.infra.errors import InputError
from simrec.recommender.package import MANIFEST_FILE, write_package
from simrec.retrieval.engine import TIMEOUT_SECONDS, VectorEngine, collection_name
from simrec.retrieval.engine_cli import publish_vectors
from simrec.retrieval.index import IndexSpec, build_index

SMOKE_QUERIES = 3  # test items whose answers the package records, to be asked again wherever it loads
DEFAULT_ALIAS = "simrec"  # the catalogue's serving alias in the vector engine


@dataclass(frozen=True)
class EngineTarget:
    """The vector engine evaluate publishes the catalogue's vectors to, and the catalogue's serving alias
    there (its versions are the collections `<alias>_v<N>`)."""

    uri: str
    alias: str = DEFAULT_ALIAS
    token: str = field(default="", repr=False)  # $SIMREC_VECTOR_ENGINE_TOKEN, never a flag
    timeout: float = TIMEOUT_SECONDS  # each engine call's

    def __post_init__(self) -> None:
        if not self.uri.strip():
            raise InputError("vector engine URI is empty")
        collection_name(self.alias, 1)  # InputError for a name the engine would refuse


def publish_catalogue(
    target: EngineTarget, vectors: np.ndarray, labels: np.ndarray, spec: IndexSpec
) -> dict[str, str]:
    """`vectors` (row i = items row i) and their labels as the next version of the alias's collection,
    indexed with `spec`; returns the manifest's `vector_engine` record (the URI without credentials).
    VectorEngineError, naming the engine, when it fails; a half-written collection is dropped."""
    with VectorEngine(target.uri, target.token, target.timeout) as engine:
        progress.report(f"vector engine {engine.uri}: publishing {len(vectors):,} items under {target.alias}")
        published = publish_vectors(engine, target.alias, vectors, labels, spec)
    return {"uri": published["uri"], "alias": target.alias, "collection": published["collection"]}


@dataclass(frozen=True)
class Packaged:
    index: Any  # the faiss index the package serves
    index_seconds: float
    ann: dict[str, float]  # ann_quality's measures
    onnx: dict[str, Any]  # the manifest's ONNX section (opset, agreement)
    vector_engine: dict[str, str]  # the manifest's record of the published collection ({}: none)

    def metrics(self) -> dict[str, float]:
        """The index's and the ONNX export's measures, as evaluation metrics."""
        agreement = self.onnx["agreement"]
        return (
            self.ann
            | {
                "index_build_seconds": self.index_seconds,
                "onnx_max_abs_diff": agreement["max_abs_diff"],
                "onnx_mean_abs_diff": agreement["mean_abs_diff"],
            }
            | ({"onnx_top5_identical": agreement["top5_identical"]} if "top5_identical" in agreement else {})
        )

    def agreement_reason(self) -> str:
        """The ONNX check, in the gate's words (it passed: else there would be no package)."""
        agreement = self.onnx["agreement"]
        return (
            f"ONNX model (opset {self.onnx['opset']}) agrees with Keras: max |difference| "
            f"{agreement['max_abs_diff']:.1e} <= {agreement['tolerance']:.0e} over "
            f"{agreement['images']} test images (else no package would have been built)"
        )


def package_candidate(
    package_out: Path,
    model_file: Path,
    catalogue: Catalogue,
    vectors: np.ndarray,
    index_spec: IndexSpec,
    extra: dict[str, Any],
    engine: EngineTarget | None = None,
) -> Packaged:
    """Builds and measures the index over `vectors`, publishes them to `engine` if given (before any
    package file is written: a failed publish leaves no package), and writes the package (PackageError
    when its ONNX model disagrees with `vectors` beyond the tolerance, on the whole test split)."""
    items = catalogue.items
    timer = time.perf_counter()
    index = build_index(vectors, index_spec)
    index_seconds = time.perf_counter() - timer
    ann = ann_quality(index, vectors, catalogue.labels, catalogue.where("test"))
    published = publish_catalogue(engine, vectors, catalogue.labels, index_spec) if engine else {}
    write_package(
        package_out,
        model_file,
        items,
        vectors,
        index_spec,
        smoke_items=list(items["item_id"].iloc[catalogue.where("test")[:SMOKE_QUERIES]]),
        extra=extra | ({"vector_engine": published} if published else {}),
        index=index,  # built and measured above: the package serves that same index
        agreement_rows=np.flatnonzero(items["table"].to_numpy() == "test"),
    )
    onnx = json.loads((package_out / MANIFEST_FILE).read_text())["onnx"]
    return Packaged(index, index_seconds, ann, onnx, published)
