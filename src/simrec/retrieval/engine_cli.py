"""`simrec vector-engine`: a recommender package's vectors in a Milvus collection, and the serving alias.

    publish   the package's vectors (and labels) as the next version of the collection `NAME_v<N>`,
              indexed with the package's own index settings; prints the collection's record (JSON)
    switch    points the alias NAME at a collection (the old target kept as NAME_previous)
    rollback  points NAME back at NAME_previous
    prune     drops NAME's versions that neither alias names, but the --keep newest

The engine's token, if it needs one, comes from $SIMREC_VECTOR_ENGINE_TOKEN (never a flag: flags show in
process lists). Runs in the steps image (pymilvus)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simrec.infra import progress
from simrec.recommender.package import ITEMS_FILE, load_package_index, read_manifest
from simrec.records import ENGINE_TOKEN_VARIABLE
from simrec.retrieval.engine import UNLABELLED, VectorEngine, VectorEngineError
from simrec.retrieval.index import IndexSpec, stored_vectors


def package_vectors(folder: Path) -> tuple[np.ndarray, np.ndarray, IndexSpec]:
    """The package's vectors in items order, their labels (UNLABELLED for unlabelled items) and its index
    settings. InputError for compressed index kinds: they keep codes, not the vectors."""
    manifest = read_manifest(folder)
    settings = manifest["index"]
    vectors = stored_vectors(load_package_index(folder, manifest), settings["kind"])
    labels = pd.read_parquet(folder / ITEMS_FILE, columns=["label"])["label"]
    spec = IndexSpec.from_settings(settings)
    return vectors, labels.fillna(UNLABELLED).to_numpy(np.int64), spec


def next_version(engine: VectorEngine, name: str) -> int:
    return max((version for version, _ in engine.versions(name)), default=0) + 1


def publish_vectors(
    engine: VectorEngine,
    name: str,
    vectors: np.ndarray,
    labels: np.ndarray,
    spec: IndexSpec,
    version: int | None = None,
) -> dict[str, Any]:
    """`vectors` (row i = the package's items row i) and their labels as version `version` (default: the
    next one) of `name`'s collection, indexed with `spec`, progress reported; the collection's record."""
    version = version or next_version(engine, name)

    def written(done: int, total: int) -> None:
        progress.report(f"vector engine: {done:,}/{total:,} items written")

    collection = engine.create_collection(name, version, vectors, labels, spec, progress=written)
    return {"uri": engine.uri, "collection": collection, "items": len(vectors), "index": spec.settings()}


def publish(engine: VectorEngine, name: str, folder: Path, version: int | None = None) -> dict[str, Any]:
    vectors, labels, spec = package_vectors(folder)
    return publish_vectors(engine, name, vectors, labels, spec, version)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec vector-engine", description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    for action, help_text in (
        ("publish", "the package's vectors as the collection's next version"),
        ("switch", "point the alias at a collection"),
        ("rollback", "point the alias back at its previous collection"),
        ("prune", "drop versions neither alias names"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("--uri", required=True, help="the engine, e.g. http://milvus.milvus:19530")
        sub.add_argument(
            "--name", required=True, help="the catalogue's name: alias NAME, collections NAME_v<N>"
        )
        sub.add_argument("--timeout", type=float, default=30.0, help="seconds for each engine call")
        if action == "publish":
            sub.add_argument("--package", type=Path, required=True, help="recommender package folder")
            sub.add_argument("--version", type=int, help="collection version (default: the next one)")
        if action == "switch":
            sub.add_argument("--collection", required=True, help="collection the alias should name")
        if action == "prune":
            sub.add_argument("--keep", type=int, default=0, help="newest versions kept besides the aliased")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        with VectorEngine(args.uri, os.environ.get(ENGINE_TOKEN_VARIABLE, ""), args.timeout) as engine:
            if args.action == "publish":
                result: Any = publish(engine, args.name, args.package, args.version)
            elif args.action == "switch":
                result = asdict(engine.switch_alias(args.name, args.collection))
            elif args.action == "rollback":
                result = asdict(engine.rollback(args.name))
            else:
                result = {"dropped": engine.drop_old_versions(args.name, args.keep)}
    except VectorEngineError as exc:
        sys.exit(f"simrec vector-engine {args.action}: error: {exc}")
    print(json.dumps(result, indent=2))
