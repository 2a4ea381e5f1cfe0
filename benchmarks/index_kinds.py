"""Benchmark: the nearest-neighbour index kinds (simrec.retrieval.index) at catalogue sizes up to 1M items,
for issue #25's goal at 1M: <= 300 B/item in memory, label recall@10 loss <= 1 % against exact search.

The catalogues are made from a real package's vectors (its index must keep them: kind hnsw or exact) by
label-preserving perturbation: copy c >= 1 of every item is its vector plus Gaussian noise (`--noise` per
dimension), renormalised, with the item's label and a new row. Per size and kind: build time; bytes per item
of the serialised index and of the memory a fresh process grows by when it loads it (anonymous RSS, measured
in a child process so the build's freed memory does not hide it); single-query search time at k=10 on one
thread (p50, p99, as a server thread runs it); label recall@10 (a same-label item among the 10 nearest other
items) and overlap of the top-10 lists against exact search (numpy, all threads) on `--queries` random
items, each query's own row left out. The numbers describe this machine with its current load (printed).

Run in the steps environment (faiss, numpy, pandas):
    PYTHONPATH=src .envs/steps/bin/python benchmarks/index_kinds.py \\
        --package .simrec/serve/packages/simrec-v1 --sizes 70k,250k \\
        [--kinds hnsw,hnsw_sq8,ivfpq,ivfpq:nprobe=32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Anonymous memory only (library code paged in is not the index), after handing the heap's free memory
# back to the system: else the load reuses what the imports freed, and seems to cost nothing.
CHILD = """
import ctypes, sys, faiss
from simrec.retrieval.index import load_index
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) * 1024
ctypes.CDLL("libc.so.6").malloc_trim(0)
before = rss()
index = load_index(sys.argv[1])
print(rss() - before)
"""


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def parse_kind(text: str):
    """`kind[:name=value,...]` -> (label, IndexSpec)."""
    from simrec.retrieval.index import IndexSpec

    kind, _, rest = text.partition(":")
    settings = {name: int(value) for name, value in (p.split("=") for p in rest.split(",") if p)}
    return text, IndexSpec(kind=kind, **settings)


def catalogue(base: np.ndarray, labels: np.ndarray, size: int, noise: float, seed: int = 0):
    """`size` unit vectors: the base vectors, then perturbed copies of them (same labels)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size) % len(base)
    vectors = np.empty((size, base.shape[1]), np.float32)
    vectors[: min(size, len(base))] = base[: min(size, len(base))]
    for start in range(len(base), size, len(base)):
        stop = min(start + len(base), size)
        noisy = rng.normal(0, noise, (stop - start, base.shape[1])).astype(np.float32)
        chunk = base[rows[start:stop]] + noisy
        vectors[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return vectors, labels[rows]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k+1 most similar rows per query, by brute force (chunks of the catalogue, all threads)."""
    best_scores = np.full((len(queries), k + 1), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), k + 1), np.int64)
    q = vectors[queries]
    for start in range(0, len(vectors), 50_000):
        scores = q @ vectors[start : start + 50_000].T
        top = np.argpartition(-scores, k, axis=1)[:, : k + 1]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_rows = np.concatenate([best_rows, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, : k + 1]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_rows = np.take_along_axis(merged_rows, order, 1)
    return best_rows


def without_own(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    return np.array([[r for r in row if r != o][:k] for row, o in zip(rows, own, strict=True)])


def measure(label, spec, vectors, labels, queries, exact, workdir: Path) -> dict:
    import faiss

    from simrec.retrieval.index import build_index, load_index, save_index, search

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index = build_index(vectors, spec)
    build_seconds = time.perf_counter() - started
    path = workdir / "index.faiss"
    save_index(index, path)
    del index
    file_bytes = path.stat().st_size
    rss = int(
        subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
        ).stdout
    )
    index = load_index(path, spec.ef_search, spec.nprobe)
    path.unlink()
    _, rows = search(index, vectors[queries], 11)
    found = without_own(rows, queries, 10)
    faiss.omp_set_num_threads(1)
    times = []
    for query in queries:
        started = time.perf_counter()
        search(index, vectors[query][None], 10)
        times.append(time.perf_counter() - started)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    hits = (labels[found] == labels[queries][:, None]).any(axis=1)
    exact_hits = (labels[exact] == labels[queries][:, None]).any(axis=1)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact, strict=True)])
    return {
        "size": len(vectors),
        "kind": label,
        "build_s": round(build_seconds, 1),
        "file_B_per_item": round(file_bytes / len(vectors), 1),
        "rss_B_per_item": round(rss / len(vectors), 1),
        "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
        "p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
        "recall_at_10": round(float(hits.mean()), 4),
        "exact_recall_at_10": round(float(exact_hits.mean()), 4),
        "recall_loss": round(float(exact_hits.mean() - hits.mean()), 4),
        "overlap_at_10": round(float(overlap), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--package",
        type=Path,
        required=True,
        help="a package whose vectors are grown, e.g. an embedded run's .simrec/serve/packages/simrec-v1",
    )
    parser.add_argument("--sizes", default="70k,250k,1M")
    parser.add_argument("--kinds", default="hnsw,hnsw_sq8,ivfpq")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.01, help="per-dimension noise of the copies")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    import faiss
    import pandas as pd

    base = faiss.read_index(str(args.package / "index.faiss"))
    base_vectors = base.reconstruct_n(0, base.ntotal)
    del base
    base_labels = pd.read_parquet(args.package / "items.parquet", columns=["label"])["label"].to_numpy()
    base_labels = np.where(pd.isna(base_labels), -1, base_labels).astype(np.int64)
    kinds = [parse_kind(text) for text in args.kinds.split(",")]
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, faiss {faiss.__version__}", flush=True)
    rows = []
    for size in map(parse_size, args.sizes.split(",")):
        vectors, labels = catalogue(base_vectors, base_labels, size, args.noise)
        queries = np.sort(np.random.default_rng(1).choice(size, args.queries, replace=False))
        started = time.perf_counter()
        exact = without_own(exact_top(vectors, queries, 11), queries, 10)
        seconds = time.perf_counter() - started
        print(f"{size} items: exact top-10 of {args.queries} queries in {seconds:.1f} s", flush=True)
        for label, spec in kinds:
            with tempfile.TemporaryDirectory() as workdir:
                row = measure(label, spec, vectors, labels, queries, exact, Path(workdir))
            rows.append(row)
            print(json.dumps(row), flush=True)
        del vectors
    print(f"load average {os.getloadavg()}")
    columns = "items kind build_s file_B/item RSS_B/item p50_ms p99_ms recall@10_(exact) loss overlap"
    print("| " + " | ".join(c.replace("_", " ") for c in columns.split()) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['kind']} | {r['build_s']} | {r['file_B_per_item']:.0f} | "
            f"{r['rss_B_per_item']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['recall_at_10']:.4f} "
            f"({r['exact_recall_at_10']:.4f}) | {r['recall_loss']:.4f} | {r['overlap_at_10']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
