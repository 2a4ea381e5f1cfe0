"""The catalogue's vectors in an existing distributed vector engine (Milvus, through pymilvus), for
catalogues past what one serving pod holds in memory; the in-process faiss index (`index.py`) stays the
default. See docs/cluster.md for when to switch and how.

One package's vectors are one *versioned collection* (`<name>_v<version>`): primary key = the package's
index row (items row i), the vector, and the item's label (-1 when unlabelled). Serving searches through
an *alias* (`<name>`) that deploy moves from one collection to the next in one engine operation; the alias
`<name>_previous` keeps the collection it pointed to before, so a rollback is one more switch and the old
version is never dropped while either alias names it.

Search answers exactly as `index.search` does: (scores, rows) each [n_queries, k], cosine similarity (inner
product of unit vectors), most similar first, rows -1 and scores -inf where fewer than k exist.

Every engine failure (unreachable, refused, timed out, a collection or alias that is not there) raises
`VectorEngineError` naming the engine, the operation and the cause; nothing is changed by a failed switch.

Over ~300 lines because it is the one adapter to the engine's API: collection lifecycle, batched inserts,
search, aliases and the translation of the client's errors belong together, and split they would each
need the others' naming rules.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import numpy as np

from simrec.infra.errors import InputError
from simrec.records import ENGINE_NAME_PATTERN
from simrec.retrieval.index import DEFAULT_SPEC, PQ_BITS, IndexSpec

PRIMARY = "row"
VECTOR = "vector"
LABEL = "label"
UNLABELLED = -1
METRIC = "IP"  # unit vectors: inner product is the cosine, the in-process index's score
CONSISTENCY = "Strong"  # a search sees every write acknowledged before it (refresh, then query)
BATCH_ROWS = 4_000  # 569-d float32: ~9 MB a gRPC message, well under Milvus's 64 MB default
TIMEOUT_SECONDS = 30.0
PREVIOUS_SUFFIX = "_previous"
NAME = re.compile(ENGINE_NAME_PATTERN)  # Milvus's rule for collection and alias names

Progress = Callable[[int, int], None]  # (rows written, rows in all)


class VectorEngineError(RuntimeError):
    """The vector engine could not do what was asked (unreachable, refused, timed out)."""


@dataclass(frozen=True)
class AliasSwitch:
    alias: str
    serving: str  # the collection the alias names now
    previous: str | None  # the one it named before (kept under <alias>_previous), None on first deploy


def collection_name(name: str, version: int) -> str:
    """The collection that holds version `version` of `name`'s vectors."""
    _check_name(name)
    if version < 1:
        raise InputError(f"a collection version must be at least 1, got {version}")
    return f"{name}_v{version}"


def engine_index(spec: IndexSpec) -> dict[str, Any]:
    """The Milvus index (type and build parameters) for an in-process index kind, and its search
    parameters: the same structure and settings, so the engine answers as the package's own index does.
    `hnsw_sq8` needs Milvus >= 2.6 (HNSW_SQ); `ivfpq` becomes IVF_PQ with the same 4-bit codes, without
    the PCA step (so `pq_m` must divide the vector size, and 569 is prime); milvus-lite has no IVF_PQ."""
    if spec.kind == "exact":
        return {"index_type": "FLAT", "params": {}, "search": {}}
    if spec.kind in ("hnsw", "hnsw_sq8"):
        build = {"M": spec.m, "efConstruction": spec.ef_construction}
        if spec.kind == "hnsw_sq8":
            return {
                "index_type": "HNSW_SQ",
                "params": build | {"sq_type": "SQ8"},
                "search": {"ef": spec.ef_search},
            }
        return {"index_type": "HNSW", "params": build, "search": {"ef": spec.ef_search}}
    return {
        "index_type": "IVF_PQ",
        "params": {"nlist": spec.nlist, "m": spec.pq_m, "nbits": PQ_BITS},
        "search": {"nprobe": spec.nprobe},
    }


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise InputError(
            f"vector engine name {name!r}: use letters, digits and underscores, not starting with a digit"
        )


class VectorEngine:
    """A connection to one Milvus (a cluster, a standalone server, or milvus-lite's server); `timeout`:
    seconds each engine call may take, retries included (rounded up to whole seconds)."""

    def __init__(self, uri: str, token: str = "", timeout: float = TIMEOUT_SECONDS) -> None:
        from pymilvus import MilvusClient

        self.uri = _without_credentials(uri)  # what messages name
        # Whole seconds: pymilvus bounds its retries of a failing call by `timeout` only when it is an int
        # (retry_on_rpc_failure in pymilvus/decorators.py); with a float it retries 75 times, backing off
        # up to 3 s, and a call to an engine that went away fails after minutes instead.
        self.timeout = math.ceil(timeout)
        with self._failures("connect"):
            # A connection of its own: pymilvus shares one per (URI, token) in a process by default, and
            # close() would then cut every other VectorEngine to the same engine (a served version's,
            # when the one it replaced closes).
            self._client = MilvusClient(
                uri=uri, token=token, timeout=self.timeout, alias=f"simrec-{uuid4().hex}"
            )
        # ... closed with this object at the latest: a server drops versions (and their engines) without
        # closing them, and a connection of each would otherwise outlive it
        self._closer = weakref.finalize(self, self._client.close)

    @contextmanager
    def _failures(self, operation: str) -> Iterator[None]:
        """Any client or transport failure as a VectorEngineError that names the engine and operation."""
        from grpc import RpcError, StatusCode
        from pymilvus.exceptions import MilvusException

        try:
            yield
        except MilvusException as exc:
            raise VectorEngineError(f"vector engine {self.uri}: {operation} failed: {exc.message}") from exc
        except RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code == StatusCode.UNIMPLEMENTED:
                details = "this engine does not implement it (milvus-lite 2.x has no aliases)"
            status = code.name if code else "RPC error"
            raise VectorEngineError(
                f"vector engine {self.uri}: {operation} failed: {status} {details}"
            ) from exc

    def __enter__(self) -> VectorEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closer()  # once: a second call, or the collection of this object after it, does nothing

    def collections(self) -> list[str]:
        with self._failures("list collections"):
            return sorted(self._client.list_collections(timeout=self.timeout))

    def create_collection(
        self,
        name: str,
        version: int,
        vectors: np.ndarray,
        labels: np.ndarray | None = None,
        spec: IndexSpec = DEFAULT_SPEC,
        batch_rows: int = BATCH_ROWS,
        progress: Progress | None = None,
    ) -> str:
        """Writes `vectors` (row i = the package's items row i) and their labels into the new collection
        `<name>_v<version>`, builds its index and loads it for search; returns the collection's name.
        Refuses a version that already exists: a version's vectors never change under a served alias."""
        from pymilvus import DataType, MilvusClient

        collection = collection_name(name, version)
        vectors = _vectors(vectors)
        index = engine_index(spec)
        if index["index_type"] == "IVF_PQ" and vectors.shape[1] % spec.pq_m:
            raise InputError(
                f"Milvus's IVF_PQ needs pq_m ({spec.pq_m}) to divide the vector size ({vectors.shape[1]}); "
                "it has no PCA step: use kind hnsw_sq8 (HNSW_SQ) or hnsw"
            )
        with self._failures(f"create {collection}"):
            if self._client.has_collection(collection, timeout=self.timeout):
                raise InputError(f"vector engine {self.uri}: collection {collection} already exists")
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(PRIMARY, DataType.INT64, is_primary=True)
            schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=vectors.shape[1])
            schema.add_field(LABEL, DataType.INT64)
            self._client.create_collection(
                collection, schema=schema, consistency_level=CONSISTENCY, timeout=self.timeout
            )
        try:
            self._write(collection, "insert", np.arange(len(vectors)), vectors, labels, batch_rows, progress)
            with self._failures(f"index {collection}"):
                # sealed segments are what an index is built on; unflushed rows are searched by brute force
                self._client.flush(collection, timeout=self.timeout)
                params = self._client.prepare_index_params()
                params.add_index(
                    VECTOR, index_type=index["index_type"], metric_type=METRIC, params=index["params"]
                )
                self._client.create_index(collection, params, timeout=self.timeout)
                self._client.load_collection(collection, timeout=self.timeout)
        except BaseException:
            self._drop_quietly(collection)  # half a version must never be switched to
            raise
        return collection

    def upsert(
        self,
        collection: str,
        rows: np.ndarray,
        vectors: np.ndarray,
        labels: np.ndarray | None = None,
        batch_rows: int = BATCH_ROWS,
        progress: Progress | None = None,
    ) -> None:
        """Writes (or replaces) these rows of `collection` (a name or an alias): a refresh's new items."""
        self._write(
            collection, "upsert", np.asarray(rows, np.int64), _vectors(vectors), labels, batch_rows, progress
        )

    def _write(
        self,
        collection: str,
        how: str,
        rows: np.ndarray,
        vectors: np.ndarray,
        labels: np.ndarray | None,
        batch_rows: int,
        progress: Progress | None,
    ) -> None:
        if len(rows) != len(vectors) or (labels is not None and len(labels) != len(vectors)):
            raise InputError(
                f"{len(rows)} rows, {len(vectors)} vectors and "
                f"{'no' if labels is None else len(labels)} labels: one of each per item"
            )
        labels = np.full(len(rows), UNLABELLED, np.int64) if labels is None else np.asarray(labels, np.int64)
        write = getattr(self._client, how)
        for start in range(0, len(rows), batch_rows):
            stop = min(start + batch_rows, len(rows))
            batch = [
                {PRIMARY: int(row), VECTOR: vector, LABEL: int(label)}
                for row, vector, label in zip(
                    rows[start:stop], vectors[start:stop], labels[start:stop], strict=True
                )
            ]
            with self._failures(f"{how} rows {start}-{stop - 1} into {collection}"):
                write(collection, batch, timeout=self.timeout)
            if progress:
                progress(stop, len(rows))

    def count(self, collection: str, below: int | None = None) -> int:
        """Rows in `collection`; with `below`, only the rows whose key is under it."""
        with self._failures(f"count {collection}"):
            result = self._client.query(
                collection, filter=_rows_below(below), output_fields=["count(*)"], timeout=self.timeout
            )
        return int(result[0]["count(*)"])

    def dimension(self, collection: str) -> int:
        """The size of `collection`'s vectors."""
        with self._failures(f"describe {collection}"):
            fields = self._client.describe_collection(collection, timeout=self.timeout)["fields"]
        return int(next(field for field in fields if field["name"] == VECTOR)["params"]["dim"])

    def vectors(self, collection: str, rows: list[int]) -> np.ndarray:
        """The vectors of these rows of `collection`, in the order asked ([len(rows), dim]); VectorEngineError
        names a row it does not hold."""
        keys = [int(row) for row in rows]
        with self._failures(f"read rows of {collection}"):
            found = self._client.get(
                collection, ids=sorted(set(keys)), output_fields=[VECTOR], timeout=self.timeout
            )
        by_row = {int(hit[PRIMARY]): hit[VECTOR] for hit in found}
        missing = [row for row in keys if row not in by_row]
        if missing:
            raise VectorEngineError(f"vector engine {self.uri}: {collection} has no row {missing[0]}")
        return np.array([by_row[row] for row in keys], np.float32).reshape(len(keys), -1)

    def search(
        self,
        collection: str,
        queries: np.ndarray,
        k: int,
        spec: IndexSpec = DEFAULT_SPEC,
        below: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each [n_queries, k], as `index.search` gives them, from `collection` (a name or
        an alias), with the search settings of `spec`'s kind; with `below`, only among the rows whose key
        is under it."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        queries = _vectors(queries)
        with self._failures(f"search {collection}"):
            hits = self._client.search(
                collection,
                data=list(queries),
                limit=k,
                output_fields=[PRIMARY],  # only the key: no vectors back over the wire
                search_params={"metric_type": METRIC, "params": engine_index(spec)["search"]},
                filter=_rows_below(below),
                timeout=self.timeout,
            )
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for query, found in enumerate(hits):
            for rank, hit in enumerate(found[:k]):
                scores[query, rank] = hit["distance"]
                rows[query, rank] = hit[PRIMARY]
        return scores, rows

    def alias_target(self, alias: str) -> str | None:
        """The collection `alias` names, None when there is no such alias."""
        _check_name(alias)
        with self._failures(f"list aliases for {alias}"):
            if alias not in self._all_aliases():
                return None
            return str(self._client.describe_alias(alias, timeout=self.timeout)["collection_name"])

    def _all_aliases(self) -> set[str]:
        return set(self._client.list_aliases(timeout=self.timeout)["aliases"])

    def switch_alias(self, alias: str, collection: str) -> AliasSwitch:
        """Points `alias` at `collection` in one engine operation (searches through the alias see the old
        collection or the new one, never neither), after `<alias>_previous` takes the old target. On
        failure the alias still names the collection it named before."""
        _check_name(alias)
        previous = self.alias_target(alias)
        with self._failures(f"switch alias {alias} to {collection}"):
            if not self._client.has_collection(collection, timeout=self.timeout):
                raise VectorEngineError(
                    f"vector engine {self.uri}: switch alias {alias} to {collection} failed: no such "
                    f"collection (the alias still names {previous})"
                )
            if previous == collection:
                return AliasSwitch(alias, collection, self.alias_target(alias + PREVIOUS_SUFFIX))
            if previous is not None:
                self._point(alias + PREVIOUS_SUFFIX, previous)
            self._point(alias, collection)
        return AliasSwitch(alias, collection, previous)

    def rollback(self, alias: str) -> AliasSwitch:
        """Points `alias` back at the collection `<alias>_previous` names (and that alias at the one it
        leaves): the version served before the last switch."""
        previous = self.alias_target(alias + PREVIOUS_SUFFIX)
        if previous is None:
            raise VectorEngineError(
                f"vector engine {self.uri}: {alias} has no previous collection to go back to"
            )
        return self.switch_alias(alias, previous)

    def _point(self, alias: str, collection: str) -> None:
        if alias in self._all_aliases():
            self._client.alter_alias(collection, alias, timeout=self.timeout)
        else:
            self._client.create_alias(collection, alias, timeout=self.timeout)

    def versions(self, name: str) -> list[tuple[int, str]]:
        """`name`'s versioned collections (see collection_name) as (version, collection), oldest first."""
        _check_name(name)
        version = re.compile(rf"^{re.escape(name)}_v(\d+)$")
        with self._failures(f"list versions of {name}"):
            collections = self._client.list_collections(timeout=self.timeout)
        return sorted((int(match.group(1)), c) for c in collections if (match := version.match(c)))

    def drop_old_versions(self, name: str, keep: int = 0) -> list[str]:
        """Drops `name`'s versioned collections except the `keep` newest and any that the serving or the
        previous alias names (those are never dropped); returns what was dropped."""
        named = {self.alias_target(name), self.alias_target(name + PREVIOUS_SUFFIX)}
        versions = self.versions(name)
        candidates = versions[: len(versions) - keep] if keep else versions
        dropped = [collection for _, collection in candidates if collection not in named]
        for collection in dropped:
            with self._failures(f"drop {collection}"):
                self._client.drop_collection(collection, timeout=self.timeout)
        return dropped

    def _drop_quietly(self, collection: str) -> None:
        with suppress(Exception):  # the engine is already failing; the caller sees the first error
            self._client.drop_collection(collection, timeout=self.timeout)


def _rows_below(below: int | None) -> str:
    """The engine's filter expression for the rows whose key is under `below` (None: every row)."""
    return "" if below is None else f"{PRIMARY} < {int(below)}"


def _without_credentials(uri: str) -> str:
    """The URI without a user:password@ part, fit for messages and logs."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _vectors(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not vectors.shape[1]:
        raise InputError(f"vectors must be a [n, dim] array, got shape {vectors.shape}")
    return vectors
