"""The index a served recommender searches, as the recommender uses it: search, the vectors of given rows,
and growth by a refresh's new items while searches on the old one run on. Rows are the package's items in
order, then the items added live, in the order they came.

`InProcessIndex` is the default: the package's faiss index, never changed after loading, beside the items
added live, searched exactly. Growing copies only the added vectors, so a refresh of a 1M-item catalogue
costs memory for its new items, not a second copy of the index (the faiss index cannot be searched while
it grows, which is why it is not grown in place). Live items are a small share of a catalogue between two
pipeline runs; the next package's index holds them all.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simrec.retrieval.index import search


class CatalogueIndex(Protocol):
    @property
    def ntotal(self) -> int:
        """Rows searched: the package's items, then the items added live."""
        ...

    @property
    def dim(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) as `index.search` gives them: cosine, most similar first, -1 where none."""
        ...

    def vectors(self, rows: list[int]) -> np.ndarray:
        """The vectors of these rows as the index holds them ([len(rows), dim]; compressed kinds decode
        their codes, close to the item's vector but not exactly it)."""
        ...

    def grown(self, vectors: np.ndarray) -> CatalogueIndex:
        """An index that also holds `vectors` as rows ntotal, ntotal + 1, ...; `self` answers as before."""
        ...


class InProcessIndex:
    def __init__(self, package_index, added: np.ndarray | None = None) -> None:  # package_index: faiss.Index
        self.package_index = package_index
        dim = package_index.d
        self.added = np.empty((0, dim), np.float32) if added is None else added

    @property
    def ntotal(self) -> int:
        return self.package_index.ntotal + len(self.added)

    @property
    def dim(self) -> int:
        return self.package_index.d

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = search(self.package_index, queries, k)
        if not len(self.added):
            return scores, rows
        added_scores, added_rows = faiss.knn(
            queries, self.added, min(k, len(self.added)), metric=faiss.METRIC_INNER_PRODUCT
        )
        added_rows = np.where(added_rows >= 0, added_rows + self.package_index.ntotal, -1)
        both_scores = np.concatenate([scores, added_scores.astype(np.float32)], axis=1)
        both_rows = np.concatenate([rows, added_rows], axis=1)
        best = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]  # ties: the package's row first
        return np.take_along_axis(both_scores, best, axis=1), np.take_along_axis(both_rows, best, axis=1)

    def vectors(self, rows: list[int]) -> np.ndarray:
        packaged = self.package_index.ntotal
        return np.stack(
            [
                self.package_index.reconstruct(row) if row < packaged else self.added[row - packaged]
                for row in rows
            ]
        ).reshape(len(rows), self.dim)

    def grown(self, vectors: np.ndarray) -> InProcessIndex:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        return InProcessIndex(self.package_index, np.concatenate([self.added, vectors]))
