"""`simrec export-onnx`: re-export a recommender package's embedding model as embedding.onnx (steps image),
for a package built before the serve image ran ONNX only (format 1), or to refresh the export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simrec.data.codec import IMAGE_SIZE, decode_png
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.progress import report
from simrec.recommender.package import (
    FORMAT,
    ITEMS_FILE,
    MANIFEST_FILE,
    PackageError,
    Recommender,
    add_onnx,
    load_package_index,
)
from simrec.retrieval.index import stored_vectors


def reexport_package(folder: Path) -> dict[str, Any]:
    """Adds embedding.onnx to a package (format 1, Keras only; or refreshes a format 2 one's) in place:
    exports its Keras model, measures the agreement over every item against the vectors in its index
    (Keras's, from when it was built), and keeps the package only if its smoke queries still answer
    exactly as recorded. Returns the manifest's new `onnx` entry."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    index = load_package_index(folder, manifest)
    # the vectors Keras made when the package was built: only an index that keeps them exactly has them
    try:
        vectors = stored_vectors(index, manifest["index"].get("kind", "hnsw"))
    except InputError as exc:
        raise PackageError(f"{folder}: cannot measure a re-export's agreement: {exc}") from exc
    images = pd.read_parquet(folder / ITEMS_FILE, columns=["image"])["image"]
    pixels = np.array([decode_png(png) for png in images], np.uint8).reshape(-1, *IMAGE_SIZE)
    entry = add_onnx(folder, vectors, pixels, index, manifest)
    before = (folder / MANIFEST_FILE).read_text()
    write_json_atomic(folder / MANIFEST_FILE, manifest | {"format": FORMAT, "onnx": entry})
    if problems := Recommender(folder).check_smoke_queries():
        (folder / MANIFEST_FILE).write_text(before)
        raise PackageError(f"{folder}: on ONNX Runtime the smoke queries answer differently: {problems[:3]}")
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="simrec export-onnx", description="Add embedding.onnx to a recommender package (re-export)"
    )
    parser.add_argument("--package", type=Path, required=True, help="recommender package folder")
    args = parser.parse_args(argv)
    entry = reexport_package(args.package)
    report(
        f"{args.package}: embedding.onnx (opset {entry['opset']}), max |ONNX - Keras| "
        f"{entry['agreement']['max_abs_diff']:.2e} over {entry['agreement']['images']} items"
    )
