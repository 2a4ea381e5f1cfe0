"""The nearest-neighbour index over the catalogue's embeddings (faiss): inner product on unit vectors,
i.e. cosine similarity. HNSW for serving; `exact` (a flat index) to measure what HNSW loses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from simrec.infra.errors import InputError

IndexKind = Literal["hnsw", "exact"]
# faiss takes smaller values without a word: an HNSW degree below 2 crashes it (segfault or assertion),
# an efSearch below 1 silently returns fewer and wrong neighbours.
SMALLEST = {"m": 2, "ef_construction": 1, "ef_search": 1}


def _at_least(name: str, value: int, smallest: int) -> None:
    if value < smallest:
        raise InputError(f"index {name} must be at least {smallest}, got {value}")


@dataclass(frozen=True)
class IndexSpec:
    kind: IndexKind = "hnsw"
    m: int = 32  # HNSW graph degree
    ef_construction: int = 200
    ef_search: int = 64  # no measured loss against exact search, half the time of 128 (README, evaluate)

    def __post_init__(self) -> None:
        for name, smallest in SMALLEST.items():
            _at_least(name, getattr(self, name), smallest)


DEFAULT_SPEC = IndexSpec()


def build_index(vectors: np.ndarray, spec: IndexSpec = DEFAULT_SPEC):  # -> faiss.Index
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if spec.kind == "exact":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    index.add(vectors)
    return index


def save_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_index(path: Path, ef_search: int | None = None):  # -> faiss.Index
    import faiss

    if ef_search is not None:
        _at_least("ef_search", ef_search, SMALLEST["ef_search"])
    index = faiss.read_index(str(path))
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each [n_queries, k], most similar first; rows are -1 where fewer than k exist."""
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, rows
