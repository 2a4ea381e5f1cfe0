"""Benchmark: the vector-engine backend (simrec.retrieval.engine) against the in-process index, on a real
package's vectors: insert rate, index build and load time, single-query search latency at k=10 (p50, p99,
one client), and top-10 overlap of the engine's answers with exact search, for the first `--items` items.

The engine is whatever `--uri` names: a Milvus cluster, or milvus-lite's server for a local figure (its
engine is pure Python over faiss: its figures say what the client and protocol cost, not what a Milvus
cluster does). The collection it writes stays there (named bench_<time>). Start a throwaway one with
    .envs/milvus-lite/bin/milvus-lite server --data-dir /tmp/milvus --host 127.0.0.1 --port 19530

Run in the steps environment (pymilvus, faiss):
    PYTHONPATH=src .envs/steps/bin/python benchmarks/vector_engine.py --package PACKAGE \\
        --uri http://127.0.0.1:19530 --items 20000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simrec.recommender.package import ITEMS_FILE, load_package_index, read_manifest
from simrec.retrieval.engine import VectorEngine
from simrec.retrieval.exact import top_k
from simrec.retrieval.index import IndexSpec, build_index, search, stored_vectors


def latencies_ms(ask, queries: np.ndarray) -> np.ndarray:
    times = []
    for query in queries:
        started = time.perf_counter()
        ask(query[None])
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times)


def percentiles(times: np.ndarray) -> str:
    return f"p50 {np.percentile(times, 50):.2f} ms, p99 {np.percentile(times, 99):.2f} ms"


def overlap(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--kind", default="hnsw", help="index kind of the engine's collection (hnsw, exact)")
    args = parser.parse_args()

    manifest = read_manifest(args.package)
    vectors = stored_vectors(load_package_index(args.package, manifest), manifest["index"]["kind"])[
        : args.items
    ]
    labels = pd.read_parquet(args.package / ITEMS_FILE, columns=["label"])["label"].fillna(-1).to_numpy()
    labels = labels[: args.items].astype(np.int64)
    spec = IndexSpec(kind=args.kind)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), args.queries, replace=False)]
    exact = top_k(queries, vectors, 10)
    print(f"{len(vectors)} items of {vectors.shape[1]} floats, {args.queries} queries, kind {args.kind}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    name = f"bench_{int(time.time())}"
    with VectorEngine(args.uri, timeout=600) as engine:
        marks = {}

        def progress(done: int, total: int) -> None:
            marks[done] = time.perf_counter()

        started = time.perf_counter()
        collection = engine.create_collection(name, 1, vectors, labels, spec, progress=progress)
        built = time.perf_counter()
        inserted = marks[len(vectors)] - started
        print(f"engine insert: {inserted:.1f} s ({len(vectors) / inserted:,.0f} items/s)")
        print(f"engine index build + load: {built - marks[len(vectors)]:.1f} s")
        engine.switch_alias(name, collection)
        _, rows = engine.search(name, queries, 10, spec)
        times = latencies_ms(lambda q: engine.search(name, q, 10, spec), queries)
        print(
            f"engine search k=10: {percentiles(times)}, top-10 overlap with exact {overlap(rows, exact):.4f}"
        )
        refreshed = vectors[:1000]
        started = time.perf_counter()
        engine.upsert(name, np.arange(len(vectors), len(vectors) + 1000), refreshed, labels[:1000])
        print(f"engine upsert of 1000 items: {time.perf_counter() - started:.2f} s")

    started = time.perf_counter()
    index = build_index(vectors, spec)
    print(f"in-process {args.kind} build: {time.perf_counter() - started:.1f} s")
    _, rows = search(index, queries, 10)
    times = latencies_ms(lambda q: search(index, q, 10), queries)
    print(
        f"in-process search k=10: {percentiles(times)}, top-10 overlap with exact {overlap(rows, exact):.4f}"
    )


if __name__ == "__main__":
    main()
