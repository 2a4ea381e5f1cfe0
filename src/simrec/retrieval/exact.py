"""Exact cosine nearest neighbours over L2-normalised embeddings, and retrieval metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Bytes a chunk of queries may take: each (query, gallery item) pair costs a float32 similarity, its
# negated copy and argpartition's int64 index (~16 B), so a fixed 2,048-query chunk needed 32 GB at 1M items.
CHUNK_BYTES = 256 * 2**20
BYTES_PER_PAIR = 16


def top_k(
    queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False, chunk: int = 2048
) -> np.ndarray:
    """Indices [n_queries, k] of each query's k most similar gallery items, most similar first.
    With exclude_self, queries are the gallery and an item is not its own neighbour. At most `chunk`
    queries at a time, fewer when the gallery is large (CHUNK_BYTES of working memory)."""
    result = np.empty((len(queries), k), dtype=np.int64)
    chunk = max(1, min(chunk, CHUNK_BYTES // (BYTES_PER_PAIR * max(1, len(gallery)))))
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ gallery.T
        if exclude_self:
            rows = np.arange(similarity.shape[0])
            similarity[rows, rows + start] = -np.inf
        best = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(similarity, best, axis=1).argsort(axis=1)[:, ::-1]
        result[start : start + chunk] = np.take_along_axis(best, order, axis=1)
    return result


def _hits(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int) -> np.ndarray:
    return gallery_labels[neighbours[:, :k]] == query_labels[:, None]


def recall_at_k(
    neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int
) -> float:
    """Share of queries with at least one same-label item among their k nearest neighbours."""
    return float(np.mean(_hits(neighbours, query_labels, gallery_labels, k).any(axis=1)))


def precision_at_k(
    neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int
) -> float:
    """Mean share of same-label items among each query's k nearest neighbours."""
    return float(np.mean(_hits(neighbours, query_labels, gallery_labels, k).mean(axis=1)))


def map_at_k(neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int) -> float:
    """Mean average precision at k: per query, the precision at each rank that holds a same-label item,
    summed and divided by min(k, same-label items in the gallery) (the ml_metrics `apk` convention)."""
    hits = _hits(neighbours, query_labels, gallery_labels, k).astype(np.float64)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    labels, counts = np.unique(gallery_labels, return_counts=True)
    relevant = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    denominators = np.array([min(k, relevant.get(label, 0)) for label in query_labels.tolist()], float)
    sums = (precision_at_rank * hits).sum(axis=1)
    return float(np.mean(np.divide(sums, denominators, out=np.zeros_like(sums), where=denominators > 0)))


def retrieval_metrics(
    neighbours: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    recall_ks: Sequence[int] = (1, 5, 10),
    k: int = 10,
) -> dict[str, float]:
    """recall@1/5/10, precision@10 and mAP@10 of label-based retrieval."""
    metrics = {f"recall_at_{n}": recall_at_k(neighbours, query_labels, gallery_labels, n) for n in recall_ks}
    metrics[f"precision_at_{k}"] = precision_at_k(neighbours, query_labels, gallery_labels, k)
    metrics[f"map_at_{k}"] = map_at_k(neighbours, query_labels, gallery_labels, k)
    return metrics


def per_class_recall(
    neighbours: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, k: int = 1
) -> dict[int, float]:
    """recall@k of the queries of each label."""
    hits = _hits(neighbours, query_labels, gallery_labels, k).any(axis=1)
    return {int(label): float(hits[query_labels == label].mean()) for label in np.unique(query_labels)}
