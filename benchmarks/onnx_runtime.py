"""Benchmark: one request's work in-process, on a recommender package (benchmarks/serve.py builds the 70k
one): the embedding model on ONNX Runtime under several session options against the traced Keras call
(TensorFlow, one intra-op thread, as the server ran it), and the rest of a /similar request (JSON, base64,
PNG decode, HNSW search) beside it, to see what dominates once the model is fast. It also counts the model's
multiply-adds (its Conv and MatMul/Gemm nodes, shapes from onnx's shape inference) and times one core's
single-precision matrix product (numpy's BLAS on one thread), so each variant's rate in GFLOP/s can be read
against what this core does at best: how far any runtime could still take the model.

Every variant is timed in interleaved rounds (the machine's speed drifts), median per call over all rounds,
in wall time and in this process's CPU time (all threads: TensorFlow runs ops on its pool threads), which
other load on the machine inflates far less.
Run in the steps environment (it has TensorFlow for the Keras baseline and onnxruntime):
    .envs/steps/bin/python benchmarks/onnx_runtime.py [--package .simrec/bench/serve/package] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _ort_session(path: Path, intra: int, spinning: bool, arena: bool, level: str):
    import onnxruntime as ort

    from simrec.embedding.onnx_model import session_options

    options = session_options(intra)
    if spinning:  # session_options switches it off
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def multiply_adds(path: Path) -> int:
    """Multiply-adds of one image through the model's Conv, MatMul and Gemm nodes."""
    import onnx

    model = onnx.load(str(path))
    for dim in model.graph.input[0].type.tensor_type.shape.dim:
        if not dim.dim_value:
            dim.dim_value = 1  # the batch
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    } | {weights.name: list(weights.dims) for weights in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv":  # each output value: in-channels/groups x kernel height x width
            total += int(np.prod(out)) * int(np.prod(shapes[node.input[1]][1:]))
        elif node.op_type in ("MatMul", "Gemm") and out:
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            total += int(np.prod(out)) * shapes[node.input[1]][1 if transposed else 0]
    return total


def sgemm_gflops(size: int = 1024, calls: int = 20) -> float:
    """One core's float32 matrix product rate (numpy's BLAS limited to one thread), CPU time."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    with threadpool_limits(1):
        a @ a
        started = time.process_time()
        for _ in range(calls):
            a @ a
        return 2 * size**3 * calls / (time.process_time() - started) / 1e9


def _keras(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    from simrec.embedding.keras_model import EmbeddingModel

    model = EmbeddingModel(path)
    return model._forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / ".simrec/bench/serve/package")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="calls per variant and batch size per round")
    args = parser.parse_args()
    import pandas as pd

    from simrec.data.codec import decode_png
    from simrec.recommender.package import load_package_index
    from simrec.retrieval.index import search

    manifest = json.loads((args.package / "recommender.json").read_text())
    onnx_file = args.package / "embedding.onnx"
    variants: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "keras (traced tf.function, 1 intra-op thread)": _keras(args.package / "embedding.keras"),
        "onnx: 1 thread, no spin, arena, ENABLE_ALL (serving)": _ort_session(
            onnx_file, 1, False, True, "ORT_ENABLE_ALL"
        ),
        "onnx: 2 threads, no spin": _ort_session(onnx_file, 2, False, True, "ORT_ENABLE_ALL"),
        "onnx: 2 threads, spinning": _ort_session(onnx_file, 2, True, True, "ORT_ENABLE_ALL"),
        "onnx: 1 thread, no arena": _ort_session(onnx_file, 1, False, False, "ORT_ENABLE_ALL"),
        "onnx: 1 thread, ENABLE_BASIC": _ort_session(onnx_file, 1, False, True, "ORT_ENABLE_BASIC"),
        "onnx: 1 thread, DISABLE_ALL": _ort_session(onnx_file, 1, False, True, "ORT_DISABLE_ALL"),
    }
    items = pd.read_parquet(args.package / "items.parquet", columns=["item_id", "image"])
    pngs = [bytes(png) for png in items["image"].iloc[-200:]]  # test images
    pixels = np.stack([decode_png(png) for png in pngs])
    index = load_package_index(args.package, manifest)
    body = json.dumps({"image": base64.b64encode(pngs[0]).decode(), "k": 5}).encode()
    # a different test image's vector each call: the same query again and again finds its graph nodes in
    # the CPU's caches and measured a sixth of what distinct queries cost
    vectors = itertools.cycle(
        variants["onnx: 1 thread, no spin, arena, ENABLE_ALL (serving)"](pixels[..., None].astype(np.float32))
    )

    def request_parts() -> dict[str, Callable[[], object]]:
        return {
            "json.loads of a /similar body": lambda: json.loads(body),
            "base64 decode": lambda: base64.b64decode(json.loads(body)["image"]),
            "PNG decode (simrec.data.codec)": lambda: decode_png(pngs[0]),
            "HNSW search, 1 query, top-5 (200 distinct ones in turn)": lambda: search(
                index, next(vectors)[None], 5
            ),
        }

    times: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, run in variants.items():
            for batch in (1, 8):
                x = pixels[:batch, ..., None].astype(np.float32)
                run(x)  # warm
                started, cpu_started = time.perf_counter(), time.process_time()
                for _ in range(args.calls):
                    run(x)
                times.setdefault((name, batch), []).append((time.perf_counter() - started) / args.calls)
                cpu.setdefault((name, batch), []).append((time.process_time() - cpu_started) / args.calls)
        for name, part in request_parts().items():
            part()
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(args.calls):
                part()
            times.setdefault((name, 1), []).append((time.perf_counter() - started) / args.calls)
            cpu.setdefault((name, 1), []).append((time.process_time() - cpu_started) / args.calls)

    reference = variants["keras (traced tf.function, 1 intra-op thread)"](
        pixels[:8, ..., None].astype(np.float32)
    )
    served = variants["onnx: 1 thread, no spin, arena, ENABLE_ALL (serving)"](
        pixels[:8, ..., None].astype(np.float32)
    )
    print(
        f"package {args.package} ({manifest['embedding_dim']}-d), {args.rounds} rounds x {args.calls} calls"
    )
    print(f"max |onnx - keras| over 8 images: {np.abs(reference - served).max():.2e}")
    flops = 2 * multiply_adds(onnx_file)
    print(
        f"the model: {flops / 2e6:.1f} M multiply-adds an image; one core's sgemm (numpy, 1 thread): "
        f"{sgemm_gflops():.1f} GFLOP/s"
    )
    print(f"{'what':<58}{'batch':>6}{'wall ms per call':>18}{'CPU ms per call':>17}{'GFLOP/s (CPU)':>15}")
    for (name, batch), values in times.items():
        wall, used = 1000 * float(np.median(values)), 1000 * float(np.median(cpu[(name, batch)]))
        rate = f"{flops * batch / used / 1e6:.1f}" if name in variants else ""
        print(f"{name:<58}{batch:>6}{wall:>18.3f}{used:>17.3f}{rate:>15}")


if __name__ == "__main__":
    main()
