"""The nearest-neighbour index over the catalogue's embeddings (faiss): cosine similarity of unit vectors.

Kinds (`IndexSpec.kind`), by memory per item for the default 569-d float32 vectors:
    exact     flat, inner product: what the others are measured against (2,276 B/item)
    hnsw      HNSW over the float vectors, inner product (2,276 B + the graph: ~2.5 KB/item)
    hnsw_sq8  HNSW over 8-bit scalar-quantised codes (`IndexHNSWSQ`, inner product, one byte per
              dimension, ranges trained per dimension; zero-padded to 576-d for faiss's SIMD code):
              3x smaller than `hnsw`, the same search (576 B + the graph, ~270 B at m=32: 841 B/item)
    ivfpq     PCA to `pca_dim` (default 192), then an inverted file of `nlist` lists with 4-bit
              product-quantised codes (`pq_m` sub-quantisers: `pq_m`/2 bytes; faiss's fast-scan layout),
              whose `rerank` x k best candidates are re-ranked by 8-bit scalar codes of the PCA-reduced
              vectors (`IndexRefine`); searched in `nprobe` lists (192 + 32 + 8 B of id = 232 B/item at
              the defaults, plus ~3 MB trained: PCA matrices, centroids, codebooks; ~235 B/item at 1M)

Why `ivfpq` is built this way: the goal is <= 300 B/item in memory at 1M items. Re-ranking the short list
with the exact float vectors (`IndexRefineFlat`) keeps 2,276 B/item in RAM, which defeats it, and even 8-bit
codes of the full 569 dimensions (569 B) do not fit; PCA to 192 dimensions keeps most of the variance of the
embedding, lets the re-ranking codes fit (192 B), and gives the product quantiser a dimension it can split
(569 is prime: no `pq_m` but 1 and 569 divides it). The codes are 4-bit ("fast-scan": faiss keeps a
list's codes in blocks of 32 and scores them with SIMD table lookups in registers): at 1M items one query
cost 0.16 ms of CPU against 1.78 ms for the same index with 8-bit codes, and 10 s of build against 60 s
(benchmarks/index_kinds.py's perturbed catalogue, this 2-core machine). The top-10 overlap with exact
search stayed 0.81 there, but fell from 0.79 to 0.76 on benchmarks/scale.py's real 1M catalogue: the 4-bit
codes' short list is rougher, which `rerank` 16 (not 4) mostly makes up for. PCA centres the vectors,
which breaks inner-product ranking (the mean's product with each item is not constant), but not L2 distance;
on unit vectors L2 ranks exactly as cosine (|x - y|^2 = 2 - 2 cos), so this kind searches in L2 and `search`
turns its squared distances back into cosines (1 - d/2, estimated in the reduced space). `hnsw_sq8` takes no
PCA: it is the kind that compresses without changing how the search works.

Kinds that need training (PCA, IVF centroids, PQ codebooks, SQ ranges) are trained on the vectors being
indexed, a random sample of `TRAIN_SAMPLE` of them when there are more. Small catalogues still build: the
list count is clamped to one list per `POINTS_PER_LIST` training vectors, fewer than 16 training vectors
(one per 4-bit PQ centroid) are repeated to 16, `pca_dim` to the vector size, and `pq_m` to the (reduced)
vector size when it is larger.

Compressed kinds do not keep the vectors: `reconstruct` gives decoded approximations (good enough for a
catalogue item's own query), and `stored_vectors` refuses them where the exact vectors are needed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from simrec.infra.errors import InputError
from simrec.records import INDEX_SMALLEST as SMALLEST
from simrec.records import IndexKind

KINDS: tuple[str, ...] = get_args(IndexKind)
LOSSLESS_KINDS = ("hnsw", "exact")  # keep the float vectors: reconstruct gives them back exactly
TRAIN_SAMPLE = 100_000  # training vectors at most (PCA, IVF centroids, PQ codebooks, SQ ranges)
POINTS_PER_LIST = 39  # faiss's own minimum of training points per k-means centroid
PQ_BITS = 4  # fast-scan codes: 16 centroids a sub-quantiser, scanned with SIMD lookups
PQ_CENTROIDS = 2**PQ_BITS
SIMD_WIDTH = 8  # floats faiss's scalar-quantiser SIMD code takes at once (AVX2)


def _at_least(name: str, value: int, smallest: int) -> None:
    if value < smallest:
        raise InputError(f"index {name} must be at least {smallest}, got {value}")


@dataclass(frozen=True)
class IndexSpec:
    kind: IndexKind = "hnsw"
    m: int = 32  # HNSW graph degree (hnsw, hnsw_sq8)
    ef_construction: int = 200
    ef_search: int = 64  # no measured loss against exact search, half the time of 128 (README, evaluate)
    nlist: int = 1024  # ivfpq: inverted lists (clamped for small catalogues)
    nprobe: int = 16  # ivfpq: lists searched per query
    pq_m: int = 64  # ivfpq: 4-bit PQ sub-quantisers (pq_m/2 bytes an item; must divide pca_dim)
    pca_dim: int = 192  # ivfpq: dimensions PCA keeps (clamped to the vector size); 0: no PCA
    rerank: int = 16  # ivfpq: rerank x k candidates re-ranked with 8-bit codes (4: overlap -0.1 at 70k)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name, smallest in SMALLEST.items():
            _at_least(name, getattr(self, name), smallest)
        if self.kind == "ivfpq" and self.pca_dim and self.pca_dim % self.pq_m:
            raise InputError(f"index pq_m ({self.pq_m}) must divide pca_dim ({self.pca_dim})")

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> IndexSpec:
        """The spec a package's manifest records (its `index` entry, which also holds fields that are
        not settings, such as the index version)."""
        return cls(**{key: value for key, value in settings.items() if key in cls.__dataclass_fields__})

    def settings(self) -> dict[str, Any]:
        """The settings this kind uses (for records and reports)."""
        used = {
            "exact": (),
            "hnsw": ("m", "ef_construction", "ef_search"),
            "hnsw_sq8": ("m", "ef_construction", "ef_search"),
            "ivfpq": ("nlist", "nprobe", "pq_m", "pca_dim", "rerank"),
        }[self.kind]
        return {"kind": self.kind} | {name: getattr(self, name) for name in used}


DEFAULT_SPEC = IndexSpec()


def _training_sample(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    if len(vectors) <= TRAIN_SAMPLE:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), TRAIN_SAMPLE, replace=False))
    return vectors[rows]


def _hnsw_sq8(dim: int, spec: IndexSpec):
    """HNSW over 8-bit codes; vectors whose size is not a multiple of SIMD_WIDTH are padded with zeros
    first: faiss's scalar quantiser uses its SIMD distance code only then (at 569-d, without it, the build
    took 5x and a search 3.5x as long as `hnsw`'s)."""
    import faiss

    padded = -(-dim // SIMD_WIDTH) * SIMD_WIDTH
    index = faiss.IndexHNSWSQ(padded, faiss.ScalarQuantizer.QT_8bit, spec.m, faiss.METRIC_INNER_PRODUCT)
    if padded == dim:
        return index
    pad = faiss.RemapDimensionsTransform(dim, padded, True)
    wrapped = faiss.IndexPreTransform(pad, index)
    wrapped.own_fields = True
    pad.this.disown()
    index.this.disown()
    return wrapped


def _ivfpq(dim: int, spec: IndexSpec, n_train: int):
    import faiss

    reduced = min(spec.pca_dim, dim) if spec.pca_dim else dim
    pq_m = min(spec.pq_m, reduced)
    if reduced % pq_m:
        raise InputError(
            f"index pq_m ({pq_m}) must divide the vector size{' after PCA' if reduced != dim else ''} "
            f"({reduced}); set pca_dim to a multiple of pq_m"
        )
    nlist = max(1, min(spec.nlist, n_train // POINTS_PER_LIST))
    quantizer = faiss.IndexFlatL2(reduced)
    base = faiss.IndexIVFPQFastScan(quantizer, reduced, nlist, pq_m, PQ_BITS, faiss.METRIC_L2)
    base.nprobe = spec.nprobe
    base.own_fields = True
    quantizer.this.disown()
    refine = faiss.IndexScalarQuantizer(reduced, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    index = faiss.IndexRefine(base, refine)
    index.k_factor = float(spec.rerank)
    index.own_fields = True
    base.this.disown()
    refine.this.disown()
    if reduced == dim:
        return index
    pca = faiss.PCAMatrix(dim, reduced)
    wrapped = faiss.IndexPreTransform(pca, index)
    wrapped.own_fields = True  # the PCA matrix and the index: freed with it, not by Python
    pca.this.disown()
    index.this.disown()
    return wrapped


def build_index(vectors: np.ndarray, spec: IndexSpec = DEFAULT_SPEC):  # -> faiss.Index
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    train = _training_sample(vectors)
    if spec.kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
    elif spec.kind == "hnsw_sq8":
        index = _hnsw_sq8(dim, spec)
    else:
        index = _ivfpq(dim, spec, len(train))
        if len(train) < PQ_CENTROIDS:  # k-means needs a training point per 4-bit centroid
            train = np.resize(train, (PQ_CENTROIDS, dim))
    for layer in _layers(index):
        if hasattr(layer, "hnsw"):
            layer.hnsw.efConstruction = spec.ef_construction
            layer.hnsw.efSearch = spec.ef_search
    if not index.is_trained:
        index.train(train)
    index.add(vectors)
    return index


def _layers(index) -> Iterator[Any]:
    """The index and the indexes it wraps (PCA pre-transform, re-ranking), outermost first."""
    import faiss

    while index is not None:
        yield index
        if isinstance(index, faiss.IndexPreTransform):
            index = faiss.downcast_index(index.index)
        elif isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        else:
            index = None


def save_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def load_index(path: Path, ef_search: int | None = None, nprobe: int | None = None):  # -> faiss.Index
    """The index in `path`, with HNSW's efSearch (HNSW kinds) and IVF's nprobe (IVF kinds) set when given;
    the other kinds ignore them."""
    import faiss

    if ef_search is not None:
        _at_least("ef_search", ef_search, SMALLEST["ef_search"])
    if nprobe is not None:
        _at_least("nprobe", nprobe, SMALLEST["nprobe"])
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    for layer in _layers(index):
        if ef_search is not None and hasattr(layer, "hnsw"):
            layer.hnsw.efSearch = ef_search
        if nprobe is not None and isinstance(layer, faiss.IndexIVF):
            layer.nprobe = nprobe
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each [n_queries, k], most similar first; rows are -1 where fewer than k exist.
    Scores are cosine similarities, estimated from the codes for compressed kinds (1 - d/2 from the squared
    L2 distance d of the kinds that search in L2)."""
    import faiss

    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    if index.metric_type == faiss.METRIC_L2:
        scores = np.where(rows >= 0, 1.0 - scores / 2.0, -np.inf).astype(np.float32)
    return scores, rows


def stored_vectors(index, kind: str) -> np.ndarray:
    """Every vector the index holds, in row order, exactly as added (InputError for the compressed kinds,
    which keep only codes: decoding them gives approximations, not the vectors)."""
    if kind not in LOSSLESS_KINDS:
        raise InputError(
            f"a {kind!r} index keeps compressed codes, not the vectors it was built from; "
            f"only {', '.join(LOSSLESS_KINDS)} indexes give them back (rebuild the package with evaluate)"
        )
    return index.reconstruct_n(0, index.ntotal)
