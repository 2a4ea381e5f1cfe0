"""A served package's index in a vector engine (`engine.VectorEngine`): the CatalogueIndex over the
package's own versioned collection, which its manifest names (`vector_engine`, docs/cluster.md).

Rows are the collection's keys: the package's items, then the items a refresh added, upserted as rows
ntotal, ntotal + 1, ... of the same collection. An index object searches only its own rows (`row <
ntotal`), so an older object, still answering a request after a refresh switched to the grown one, never
returns a row it has no item for; neither does a fresh server whose collection still holds an earlier
process's live additions (its own refreshes write those rows again).

The server searches the collection by name, not through the alias: each loaded version answers from its
own collection, the previous one too, so a rollback needs no engine call to answer right. The alias is
for everything else that reads the catalogue; deploy and rollback move it (serving.state).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from simrec.infra.errors import InputError
from simrec.records import ENGINE_TOKEN_VARIABLE
from simrec.retrieval.engine import VectorEngine
from simrec.retrieval.index import IndexSpec

# A query waits this long for the engine at most: an unreachable engine is a quick, clear 503, not a
# request hanging for the engine client's default.
SERVING_TIMEOUT_SECONDS = 5


class EngineIndex:
    def __init__(self, engine: VectorEngine, collection: str, ntotal: int, dim: int, spec: IndexSpec) -> None:
        self.engine = engine
        self.collection = collection
        self.spec = spec
        self._ntotal = ntotal
        self._dim = dim

    @property
    def ntotal(self) -> int:
        return self._ntotal

    @property
    def dim(self) -> int:
        return self._dim

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.search(self.collection, queries, k, self.spec, below=self.ntotal)

    def vectors(self, rows: list[int]) -> np.ndarray:
        return self.engine.vectors(self.collection, rows)

    def grown(self, vectors: np.ndarray) -> EngineIndex:
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        self.engine.upsert(self.collection, np.arange(self.ntotal, self.ntotal + len(vectors)), vectors)
        return EngineIndex(self.engine, self.collection, self.ntotal + len(vectors), self.dim, self.spec)

    def point_alias(self, alias: str) -> None:
        """Points `alias` at this index's collection (VectorEngineError, and the alias unchanged, if not)."""
        self.engine.switch_alias(alias, self.collection)


def open_engine_index(
    record: dict[str, Any], index_settings: dict[str, Any], items: int, dim: int, uri: str | None = None
) -> EngineIndex:
    """The index a manifest's `vector_engine` record names, on the engine at `uri` (default the record's:
    a serving pod may reach the engine at another address than evaluate did). InputError when the
    collection does not hold the package's `items` rows of `dim`-d vectors; VectorEngineError when the
    engine cannot say."""
    engine = VectorEngine(
        uri or record["uri"], os.environ.get(ENGINE_TOKEN_VARIABLE, ""), timeout=SERVING_TIMEOUT_SECONDS
    )
    collection = record["collection"]
    if collection not in engine.collections():
        raise InputError(f"vector engine {engine.uri} has no collection {collection}")
    held, size = engine.count(collection, below=items), engine.dimension(collection)
    if (held, size) != (items, dim):
        raise InputError(
            f"vector engine {engine.uri}: {collection} holds {held} of the package's {items} rows, of "
            f"{size}-d vectors for a {dim}-d model"
        )
    return EngineIndex(engine, collection, items, dim, IndexSpec.from_settings(index_settings))
