"""The recommender package: what evaluate builds, register versions in MLflow, and serving loads.

A folder of plain files (no pickles):
    embedding.keras    the embedding model (built-in Keras layers only): the model the index vectors
                       were made with, kept for lineage, evaluate's champion comparison (its Spark
                       job embeds with it) and re-exports
    embedding.onnx     the same model as ONNX (simrec.embedding.onnx_export): what serving runs, on
                       ONNX Runtime
    index.faiss        faiss index over every catalogue item's embedding; index row i = items row i
    items.parquet      item_id, label, label_name (both null for an unlabelled item), image (PNG bytes),
                       in index row order
    recommender.json   format, model_id, embedding_dim, item count, index settings and version, the
                       ONNX file's sha256, opset and measured agreement with Keras, and smoke queries
                       with the answers this package gave when it was built (on ONNX Runtime)

Format 2 added embedding.onnx. A format 1 package (Keras only) is refused with a message naming
`simrec export-onnx`, which adds the ONNX model to it in the steps image: the serve image has no
TensorFlow to run the Keras file, and a package whose served model was never checked against Keras
should not serve.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simrec.data.codec import decode_png
from simrec.embedding.embedder import file_sha256
from simrec.embedding.runtimes import RUNTIMES
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.retrieval.catalogue_index import CatalogueIndex, InProcessIndex
from simrec.retrieval.index import DEFAULT_SPEC, IndexSpec, build_index, load_index, save_index

FORMAT = 2
MODEL_FILE = "embedding.keras"
ONNX_FILE = "embedding.onnx"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "recommender.json"
PACKAGE_FILES = (MODEL_FILE, ONNX_FILE, INDEX_FILE, ITEMS_FILE, MANIFEST_FILE)
ITEM_COLUMNS = ["item_id", "label", "label_name", "image"]
SMOKE_K = 5


class PackageError(InputError):
    """A folder that is not a usable recommender package."""


@dataclass(frozen=True)
class Neighbour:
    item_id: str
    label: int | None  # None: an unlabelled catalogue item
    label_name: str | None
    score: float


def item_label(label: Any, label_name: Any) -> tuple[int | None, str | None]:
    """(label, label_name) of an items row, None for an unlabelled item (parquet/pandas give NaN or <NA>)."""
    if pd.isna(label):
        return None, None
    return int(label), str(label_name)


def _described(items: pd.DataFrame) -> list[tuple[str, int | None, str | None]]:
    """(item_id, label, label_name) per items row, made once: answers are built from it per request."""
    return [
        (str(item_id), *item_label(label, name))
        for item_id, label, name in zip(items["item_id"], items["label"], items["label_name"], strict=True)
    ]


class Recommender:
    """Top-k visually similar catalogue items for an image or for a catalogue item."""

    def __init__(
        self, folder: Path, runtime: str = "onnx", threads: int = 1, vector_engine_uri: str | None = None
    ) -> None:
        """runtime: "onnx" (ONNX Runtime, `threads` intra-op threads; every image serves this way) or
        "keras" (TensorFlow: the steps image, and the benchmark's comparison). A package whose manifest
        names a vector engine (`vector_engine`) searches its collection there, on the engine at
        `vector_engine_uri` if given, else at the manifest's URI; its index.faiss is not loaded."""
        folder = Path(folder)
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.folder = folder
        self.manifest = read_manifest(folder)
        self.model = _embedding_model(folder, self.manifest, runtime, threads)
        self.items = pd.read_parquet(folder / ITEMS_FILE, columns=ITEM_COLUMNS)
        self.index: CatalogueIndex = self._catalogue_index(vector_engine_uri)
        if self.index.ntotal != len(self.items) or self.index.dim != self.model.dim:
            raise PackageError(
                f"{folder}: index holds {self.index.ntotal} vectors of size {self.index.dim} for "
                f"{len(self.items)} items and a {self.model.dim}-d model"
            )
        self.rows = pd.Series(np.arange(len(self.items)), index=self.items["item_id"])
        self._described = _described(self.items)

    def _catalogue_index(self, vector_engine_uri: str | None) -> CatalogueIndex:
        record = self.manifest.get("vector_engine")
        if record is None:
            return InProcessIndex(load_package_index(self.folder, self.manifest))
        from simrec.retrieval.engine_index import open_engine_index

        try:
            return open_engine_index(
                record, self.manifest["index"], len(self.items), self.model.dim, vector_engine_uri
            )
        except InputError as exc:
            raise PackageError(f"{self.folder}: {exc}") from exc

    @property
    def index_version(self) -> int:
        return int(self.manifest["index"]["version"])

    def _neighbours(self, scores: np.ndarray, rows: np.ndarray, skip: list[int | None], k: int) -> list:
        answers = []
        for score_row, index_row, own in zip(scores, rows, skip, strict=True):
            found = [
                Neighbour(*self._described[r], float(s))
                for s, r in zip(score_row, index_row, strict=True)
                if r >= 0 and r != own
            ]
            answers.append(found[:k])
        return answers

    def similar_to_pixels(self, pixels: np.ndarray, k: int) -> list[list[Neighbour]]:
        """For each [28, 28] uint8 image, its k most similar catalogue items (cosine), best first."""
        scores, rows = self.index.search(self.model.embed_pixels(pixels), k)
        return self._neighbours(scores, rows, [None] * len(rows), k)

    def similar_to_items(self, item_ids: list[str], k: int) -> list[list[Neighbour]]:
        """For each catalogue item, the k most similar other items."""
        unknown = [item for item in item_ids if item not in self.rows.index]
        if unknown:
            raise InputError(f"unknown item_id {unknown[0]!r}")
        own = [int(self.rows[item]) for item in item_ids]
        # compressed index kinds give their codes decoded: close to the item's vector, not exactly it
        scores, rows = self.index.search(self.index.vectors(own), k + 1)
        return self._neighbours(scores, rows, own, k)

    def image(self, item_id: str) -> bytes:
        if item_id not in self.rows.index:
            raise InputError(f"unknown item_id {item_id!r}")
        return bytes(self.items["image"].iat[int(self.rows[item_id])])

    def with_items(self, items: pd.DataFrame) -> Recommender:
        """A recommender whose index also holds `items` (item_id, label, label_name, image as PNG bytes),
        embedded with this package's model, as the next index version. `self` is left unchanged, so
        searches running on it are undisturbed, and the caller switches to the new one in one assignment;
        the two share the package's index (CatalogueIndex.grown). The package's files are not changed."""
        new = items[ITEM_COLUMNS].reset_index(drop=True)
        duplicated = new["item_id"][new["item_id"].duplicated()]
        if len(duplicated):
            raise InputError(f"item_id {duplicated.iloc[0]!r} appears twice in the new items")
        known = [item for item in new["item_id"] if item in self.rows.index]
        if known:
            raise InputError(f"item_id {known[0]!r} is already in the catalogue")
        pixels = []
        for item_id, png in zip(new["item_id"], new["image"], strict=True):
            try:
                pixels.append(decode_png(png))
            except InputError as exc:
                raise InputError(f"item {item_id!r}: {exc}") from exc
        grown = copy.copy(self)
        if len(new):
            grown.index = self.index.grown(self.model.embed_pixels(np.stack(pixels)))
        grown.items = pd.concat([self.items, new], ignore_index=True)
        grown.rows = pd.Series(np.arange(len(grown.items)), index=grown.items["item_id"])
        grown._described = self._described + _described(new)
        index_settings = self.manifest["index"] | {"version": self.index_version + 1}
        grown.manifest = self.manifest | {"items": len(grown.items), "index": index_settings}
        return grown

    def smoke_answers(self, item_id: str) -> dict[str, list[str]]:
        """The top-k item ids for a catalogue item, asked by item and by its image."""
        pixels = decode_png(self.image(item_id))[None]
        return {
            "by_item": [n.item_id for n in self.similar_to_items([item_id], SMOKE_K)[0]],
            "by_image": [n.item_id for n in self.similar_to_pixels(pixels, SMOKE_K)[0]],
        }

    def check_smoke_queries(self) -> list[str]:
        """Differences between this package's answers now and the answers recorded when it was built."""
        problems = []
        for query in self.manifest["smoke_queries"]:
            answers = self.smoke_answers(query["item_id"])
            for way, expected in query["expected"].items():
                if answers[way] != expected:
                    problems.append(f"{query['item_id']} {way}: {answers[way]} != {expected}")
        return problems


def load_package_index(folder: Path, manifest: dict[str, Any]) -> Any:
    """The package's index with the search settings its manifest records (efSearch, nprobe)."""
    settings = manifest["index"]
    return load_index(folder / INDEX_FILE, settings.get("ef_search"), settings.get("nprobe"))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a complete package of this format (PackageError with what to do otherwise)."""
    if not (folder / MANIFEST_FILE).is_file():
        raise PackageError(f"{folder}: not a recommender package (missing {MANIFEST_FILE})")
    manifest: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())
    if manifest.get("format") == 1:
        raise PackageError(
            f"{folder}: package format 1 has no {ONNX_FILE}; re-export it with "
            f"`simrec export-onnx --package {folder}` (steps image)"
        )
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{folder}: package format {manifest.get('format')}, expected {FORMAT}")
    missing = [name for name in PACKAGE_FILES if not (folder / name).is_file()]
    if missing:
        raise PackageError(f"{folder}: not a recommender package (missing {', '.join(missing)})")
    return manifest


def _embedding_model(folder: Path, manifest: dict[str, Any], runtime: str, threads: int) -> Any:
    if runtime == "keras":
        from simrec.embedding.keras_model import EmbeddingModel

        model = EmbeddingModel(folder / MODEL_FILE)
        if model.model_id != manifest["model_id"]:
            raise PackageError(f"{folder}: {MODEL_FILE} is not the model this package was built with")
        return model
    from simrec.embedding.onnx_export import disagreement
    from simrec.embedding.onnx_model import OnnxEmbeddingModel

    onnx = manifest.get("onnx") or {}
    # Checked before loading: a corrupt or swapped file is refused by name, not by ORT's parser error.
    # The Keras file is not run here, but it is the model the package names (lineage, re-export).
    if file_sha256(folder / MODEL_FILE) != manifest["model_id"]:
        raise PackageError(f"{folder}: {MODEL_FILE} is not the model this package was built with")
    if file_sha256(folder / ONNX_FILE) != onnx.get("sha256"):
        raise PackageError(f"{folder}: {ONNX_FILE} is not the model this package was built with")
    if reason := disagreement(onnx.get("agreement")):
        raise PackageError(f"{folder}: {reason}")
    return OnnxEmbeddingModel(folder / ONNX_FILE, manifest["model_id"], threads)


def add_onnx(
    folder: Path, vectors: np.ndarray, pixels: np.ndarray, index: Any, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Exports the folder's Keras model to its embedding.onnx (steps image) and returns the manifest
    entry: file hash, opset, converter and runtime versions, and the agreement of the ONNX model's
    vectors for `pixels` with `vectors`, Keras's for the same images. PackageError when they disagree
    beyond the tolerance: such a package is never built."""
    import onnxruntime

    from simrec.embedding.onnx_export import agreement, disagreement, export_onnx
    from simrec.embedding.onnx_model import OnnxEmbeddingModel

    exported = export_onnx(folder / MODEL_FILE, folder / ONNX_FILE)
    onnx_vectors = OnnxEmbeddingModel(folder / ONNX_FILE, manifest["model_id"]).embed_pixels(pixels)
    record = agreement(vectors, onnx_vectors, index, SMOKE_K)
    if reason := disagreement(record):
        raise PackageError(f"{folder}: the exported {ONNX_FILE} is refused: {reason}")
    return (
        {"sha256": file_sha256(folder / ONNX_FILE), "onnxruntime": onnxruntime.__version__}
        | exported
        | {"agreement": record}
    )


def write_package(
    folder: Path,
    model_file: Path,
    items: pd.DataFrame,
    vectors: np.ndarray,
    spec: IndexSpec = DEFAULT_SPEC,
    smoke_items: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    index: Any = None,
    agreement_rows: np.ndarray | None = None,
) -> Path:
    """Builds the package in `folder`: the model file and its ONNX export, the index over `vectors`
    (row i = items row i; `index` when the caller already built it with `spec`), the items table and the
    manifest, with the ONNX model's agreement with `vectors` over the items at `agreement_rows` (default
    all) and smoke queries answered by the finished package (on ONNX Runtime, as it will serve)."""
    if len(items) != len(vectors):
        raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, folder / MODEL_FILE)
    index = build_index(vectors, spec) if index is None else index
    save_index(index, folder / INDEX_FILE)
    items[ITEM_COLUMNS].reset_index(drop=True).to_parquet(folder / ITEMS_FILE, index=False)
    manifest = {
        "format": FORMAT,
        "model_id": file_sha256(model_file),
        "embedding_dim": int(vectors.shape[1]),
        "items": len(items),
        "index": asdict(spec) | {"version": 1},
        "smoke_queries": [],
    } | (extra or {})
    rows = np.arange(len(items)) if agreement_rows is None else np.asarray(agreement_rows)
    pixels = np.array([decode_png(png) for png in items["image"].iloc[rows]], np.uint8).reshape(-1, 28, 28)
    manifest["onnx"] = add_onnx(folder, vectors[rows], pixels, index, manifest)
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    recommender = Recommender(folder)
    manifest["smoke_queries"] = [
        {"item_id": item, "expected": recommender.smoke_answers(item)}
        for item in (smoke_items or list(items["item_id"].iloc[:3]))
    ]
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return folder
