"""Exact cosine nearest neighbours over L2-normalised embeddings, and retrieval metrics."""

from __future__ import annotations

import numpy as np


def top_k(
    queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False, chunk: int = 2048
) -> np.ndarray:
    """Indices [n_queries, k] of each query's k most similar gallery items, most similar first.
    With exclude_self, queries are the gallery and an item is not its own neighbour."""
    result = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ gallery.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        best = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(similarity, best, axis=1).argsort(axis=1)[:, ::-1]
        result[start : start + chunk] = np.take_along_axis(best, order, axis=1)
    return result


def recall_at_k(
    neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int
) -> float:
    """Share of queries with at least one same-label item among their k nearest neighbours."""
    return float(np.mean((gallery_labels[neighbours[:, :k]] == query_labels[:, None]).any(axis=1)))
