"""The index a served recommender searches, as the recommender uses it: search, the vectors of given rows,
and growth by a refresh's new items while searches on the old one run on. Rows are the package's items in
order, then the items added live, in the order they came.

`InProcessIndex` is the default: the package's faiss index, never changed after loading, beside an HNSW
index of the items added live (their vectors kept whole: the default kind). Growing copies only the live
index and adds to the copy, so a refresh of a 1M-item catalogue costs memory for its new items, not a second
copy of the package's index (a faiss index cannot be searched while it grows, which is why neither is
grown in place). Live items are a small share of a catalogue between two pipeline runs; the next package's
index holds them all.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simrec.retrieval.index import IndexSpec, build_index, search

LIVE_SPEC = IndexSpec(kind="hnsw")  # lossless vectors, approximate search like the default kind


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
    def __init__(self, package_index, live=None) -> None:  # faiss.Index each; live: None before any refresh
        self.package_index = package_index
        self.live = live

    @property
    def ntotal(self) -> int:
        return self.package_index.ntotal + (self.live.ntotal if self.live is not None else 0)

    @property
    def dim(self) -> int:
        return self.package_index.d

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = search(self.package_index, queries, k)
        if self.live is None:
            return scores, rows
        live_scores, live_rows = search(self.live, queries, k)
        live_rows = np.where(live_rows >= 0, live_rows + self.package_index.ntotal, -1)
        both_scores = np.concatenate([scores, live_scores], axis=1)
        both_rows = np.concatenate([rows, live_rows], axis=1)
        best = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]  # ties: the package's row first
        return np.take_along_axis(both_scores, best, axis=1), np.take_along_axis(both_rows, best, axis=1)

    def vectors(self, rows: list[int]) -> np.ndarray:
        packaged = self.package_index.ntotal
        return np.stack(
            [
                self.package_index.reconstruct(row)
                if row < packaged
                else self.live.reconstruct(row - packaged)
                for row in rows
            ]
        ).reshape(len(rows), self.dim)

    def grown(self, vectors: np.ndarray) -> InProcessIndex:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.live is None:
            return InProcessIndex(self.package_index, build_index(vectors, LIVE_SPEC))
        live = faiss.clone_index(self.live)
        live.add(vectors)
        return InProcessIndex(self.package_index, live)
