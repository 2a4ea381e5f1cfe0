"""Benchmark: what each step costs as the catalogue grows (issue #25), through the steps' own library code.

Per catalogue size N, a catalogue of N items is made from Fashion-MNIST: the official test split (kept as
it is: it is the split retrieval is measured on) plus N - len(test) train items, the official train images
first, then label-preserving transformations of them (a shift of up to 2 pixels, a horizontal flip,
Gaussian noise), written as the four IDX files ingest reads. Then, measured:
- ingest: `simrec.steps.ingest.ingest` (read, verify, PNG-encode, Delta commit) time; table size on disk
- Spark batch embedding: `simrec.evaluate.catalogue_embeddings.embed_catalogue` (evaluate's Spark job,
  the Keras model on the Python workers) in a local Spark session of 1 and of 2 task slots (local[1],
  local[2]: one local executor with 1 or 2 cores), items/s; every slot count but the last embeds a seeded
  sample of at most `--embed-sample` items (a rate per item; at 1M local[1] would take ~25 min), the last
  the whole catalogue; then the vectors and items are read back as evaluate does (`read_vectors`,
  `Catalogue.collect`)
- index build per kind (`simrec.retrieval.index.build_index`): time, and peak memory growth of this
  process during the build (VmHWM reset before it); label recall@10 and top-10 overlap against exact
  search (`simrec.evaluate.measure.ann_quality`, as evaluate measures them) on `--queries` test items
- the served kind's package (`simrec.recommender.package.write_package`, as evaluate writes it), served
  by `simrec serve` in the serve environment (benchmarks/serve.py's start and load): start time, p50/p99
  of /similar at `--clients` clients by image (top-10: the model and the index) and by item (a product
  page's query: the index alone), server RSS
- live refresh: `--refresh-items` new items (transformed train images, new ids) sent to that server with
  `simrec.serving.admin_client.add_missing_items` (the refresh step's client): time, RSS after.

Prints the tables, writes them as JSON and a log-log plot of each cost against catalogue size. The machine's
core count, load average and the date are printed with them: on a shared machine times are noisy.

Run in the steps environment (Spark, TensorFlow, faiss, matplotlib); the server runs in .envs/serve:
    PYTHONPATH=src .envs/steps/bin/python benchmarks/scale.py --sizes 70k,250k \\
        --package .simrec/serve/packages/simrec-v1 [--kinds hnsw,hnsw_sq8,ivfpq] [--plot docs/scale.png]
    ... benchmarks/scale.py --quick --source DIR --package DIR   (a few thousand items, one kind)
The package gives the embedding model (embedding.keras; no training here)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from serve import STARTS, free_port, load, start, stop  # benchmarks/serve.py: the same server harness

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "/usr/share/datasets/fashion-mnist"
K = 10
QUERY_IMAGES = 200  # distinct test images the load clients send
MAX_SHIFT = 2
NOISE_SIGMA = 6.0  # grey levels


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def transformed(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label-preserving variants of [n, 28, 28] uint8 images: each shifted by up to MAX_SHIFT pixels
    (zero fill), flipped left-right with probability 1/2 (every Fashion-MNIST class is itself mirrored:
    a left shoe becomes a right one), with Gaussian noise. Never the image itself (the shift is not 0,0)."""
    n = len(pixels)
    out = np.zeros_like(pixels)
    steps = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    steps.remove((0, 0))
    chosen = rng.integers(len(steps), size=n)
    for number, (dy, dx) in enumerate(steps):
        rows = np.flatnonzero(chosen == number)
        source = pixels[rows, max(0, -dy) : 28 - max(0, dy), max(0, -dx) : 28 - max(0, dx)]
        out[rows, max(0, dy) : 28 - max(0, -dy), max(0, dx) : 28 - max(0, -dx)] = source
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    noisy = out + rng.normal(0.0, NOISE_SIGMA, out.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def grown(pixels: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images: the originals first, then transformed copies of them, with their labels."""
    rng = np.random.default_rng(seed)
    rows = np.arange(count) % len(pixels)
    out = np.empty((count, 28, 28), np.uint8)
    first = min(count, len(pixels))
    out[:first] = pixels[:first]
    for begin in range(len(pixels), count, len(pixels)):
        end = min(begin + len(pixels), count)
        out[begin:end] = transformed(pixels[rows[begin:end]], rng)
    return out, labels[rows]


def write_source(source: str, folder: Path, size: int, seed: int = 0) -> int:
    """The four IDX files of a `size`-item catalogue in `folder` (train grown, test as released); returns
    the test split's size."""
    from simrec.data.fashion_mnist import SPLIT_FILES, locate
    from simrec.data.idx import read_idx, write_idx

    files = {name: locate(source, name, folder) for pair in SPLIT_FILES.values() for name in pair}
    images_name, labels_name = SPLIT_FILES["train"]
    test_images, test_labels = SPLIT_FILES["test"]
    tests = len(read_idx(files[test_labels], 1).array)
    if size <= tests:
        raise SystemExit(f"a catalogue of {size} items is not larger than the test split ({tests})")
    folder.mkdir(parents=True, exist_ok=True)
    pixels = read_idx(files[images_name], 3).array
    labels = read_idx(files[labels_name], 1).array
    train_pixels, train_labels = grown(pixels, labels, size - tests, seed)
    write_idx(folder / images_name, train_pixels)
    write_idx(folder / labels_name, train_labels)
    for name in (test_images, test_labels):
        target = folder / files[name].name
        target.unlink(missing_ok=True)
        target.symlink_to(files[name])
    return tests


def refresh_items(source: str, count: int, seed: int) -> pd.DataFrame:
    """`count` new items (transformed train images, ids no catalogue holds) as the admin client sends them."""
    from simrec.data.codec import encode_png
    from simrec.data.fashion_mnist import SPLIT_FILES, label_name, locate
    from simrec.data.idx import read_idx

    images_name, labels_name = SPLIT_FILES["train"]
    pixels = read_idx(locate(source, images_name, Path()), 3).array
    labels = read_idx(locate(source, labels_name, Path()), 1).array
    chosen = np.random.default_rng(seed).choice(len(pixels), count, replace=count > len(pixels))
    new = transformed(pixels[chosen], np.random.default_rng(seed + 1))
    return pd.DataFrame(
        {
            "item_id": [f"refresh-{i:06d}" for i in range(count)],
            "label": labels[chosen].astype(np.int32),
            "label_name": [label_name(int(label)) for label in labels[chosen]],
            "image": [encode_png(p) for p in new],
        }
    )


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def memory_kib(field: str, pid: str = "self") -> int:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(f"{field}:"))


def reset_peak_memory() -> None:
    """Sets this process's VmHWM (peak RSS) to its current RSS (proc(5), clear_refs), after handing the
    heap's free memory back to the system: else a build reuses what the last one freed, and seems to cost
    nothing."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def spark_session(slots: int):
    """A local Spark session of `slots` task slots (one at a time: the previous one is stopped)."""
    from pyspark.sql import SparkSession

    from simrec.infra.spark import get_spark

    if (active := SparkSession.getActiveSession()) is not None:
        active.stop()
    os.environ["SIMREC_SPARK_MASTER"] = f"local[{slots}]"
    return get_spark(f"simrec-bench-scale-{slots}")


def timed(run):
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def pipeline_costs(args: argparse.Namespace, size: int, workdir: Path) -> tuple[dict, list[dict], Path]:
    """Ingest, embedding, read-back, index kinds, the served kind's package: (figures, index rows,
    package folder)."""
    from simrec.data.lake import table_uri
    from simrec.evaluate.catalogue_embeddings import EMBEDDINGS_TABLE, embed_catalogue, read_vectors
    from simrec.evaluate.measure import Catalogue, ann_quality, catalogue_frame
    from simrec.recommender.package import MODEL_FILE, write_package
    from simrec.retrieval.index import IndexSpec, build_index
    from simrec.steps.ingest import ingest

    model_file = args.package / MODEL_FILE
    row: dict[str, Any] = {"items": size, "served_kind": args.serve_kind}
    seconds, tests = timed(lambda: write_source(args.source, workdir / "source", size))
    print(f"{size}: IDX files written in {seconds:.1f} s", flush=True)
    lake = workdir / "lake"
    spark = spark_session(2)
    row["ingest_s"], lineage = timed(
        lambda: ingest(spark, str(workdir / "source"), str(lake), checksums="none")
    )
    tables = lineage.tables.items()
    row["table_MB"] = sum(folder_bytes(lake / name) for name, _ in tables) / 1e6
    rows = sum(table.rows or 0 for _, table in tables)
    assert rows == size, (rows, size)
    print(f"{size}: ingest {row['ingest_s']:.1f} s, tables {row['table_MB']:.0f} MB", flush=True)
    slot_counts = sorted(int(text) for text in args.slots.split(","))
    for slots in slot_counts:  # the most slots last: that table is the one read back
        spark = spark_session(slots)
        frame = catalogue_frame(spark, lineage)
        last = slots == slot_counts[-1]
        name = EMBEDDINGS_TABLE if last else f"{EMBEDDINGS_TABLE}-local{slots}"
        embedded = size
        if not last and size > args.embed_sample:
            # a rate per item: a sample measures it as well as the whole catalogue, in a fraction of the time
            frame = frame.sample(fraction=args.embed_sample / size, seed=0).cache()
            embedded = frame.count()
        started = time.perf_counter()
        model_id, version = embed_catalogue(spark, frame, model_file, table_uri(str(lake), name))
        seconds = time.perf_counter() - started
        row[f"embed_{slots}_items_per_s"] = embedded / seconds
        row[f"embed_{slots}_items"] = embedded
        print(
            f"{size}: embedding {embedded} items on local[{slots}]: {seconds:.1f} s, "
            f"{embedded / seconds:.0f} items/s",
            flush=True,
        )
        if embedded != size:
            frame.unpersist()
        if not last:
            shutil.rmtree(lake / name)
    started = time.perf_counter()
    catalogue = Catalogue.collect(frame)
    uri = table_uri(str(lake), EMBEDDINGS_TABLE)
    vectors = read_vectors(spark, uri, model_id, version, catalogue.items["item_id"])
    row["read_back_s"] = time.perf_counter() - started
    spark.stop()  # its JVM's memory is not the index's
    labels = catalogue.labels
    test_rows = catalogue.where("test")
    queries = np.sort(np.random.default_rng(1).choice(test_rows, min(args.queries, len(test_rows)), False))
    indexes = []
    package = workdir / "package"
    for kind in args.kinds.split(","):
        spec = IndexSpec(kind=kind)
        reset_peak_memory()
        before = memory_kib("VmRSS")
        started = time.perf_counter()
        index = build_index(vectors, spec)
        seconds = time.perf_counter() - started
        peak = (memory_kib("VmHWM") - before) / 1024
        quality = ann_quality(index, vectors, labels, queries)
        indexes.append(
            {
                "items": size,
                "kind": kind,
                "build_s": seconds,
                "peak_MB": peak,
                "recall_at_10": quality["ann_recall_at_10"],
                "exact_recall_at_10": quality["exact_recall_at_10"],
                "recall_loss": quality["ann_recall_loss_at_10"],
                "overlap_at_10": quality["ann_neighbour_overlap_at_10"],
            }
        )
        print(f"{size}: index {json.dumps(indexes[-1])}", flush=True)
        if kind == args.serve_kind:
            shutil.rmtree(package, ignore_errors=True)
            started = time.perf_counter()
            write_package(
                package,
                model_file,
                catalogue.items,
                vectors,
                spec,
                extra={"model_name": "simrec-scale-benchmark"},
                index=index,
                agreement_rows=test_rows,
            )
            row["package_s"] = time.perf_counter() - started
            row["package_MB"] = folder_bytes(package) / 1e6
        del index
    print(f"{size}: {tests} test items are the queries' pool", flush=True)
    return row, indexes, package


def serving_costs(args: argparse.Namespace, package: Path, workdir: Path) -> dict:
    """simrec serve on the package: start, p50/p99 at args.clients, RSS; then the live refresh."""
    import requests

    from simrec.data.codec import png_base64
    from simrec.infra import paths
    from simrec.serving.admin_client import add_missing_items

    token, admin_token = "bench-token", "bench-admin-token"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(paths.envs_dir() / "serve/bin/python"), "-m", "simrec", "serve", "--package", str(package)]
    log = workdir / "simrec-serve.log"
    env = os.environ | {
        "PYTHONPATH": str(ROOT / "src"),
        "SIMREC_SERVE_TOKEN": token,
        "SIMREC_ADMIN_TOKEN": admin_token,
    }
    server = start([*command, "--port", str(port)], f"{url}/v2/health/ready", log, env)
    try:
        items = pd.read_parquet(package / "items.parquet", columns=["item_id", "image"])
        test = items[items["item_id"].str.startswith("test-")].iloc[:QUERY_IMAGES]
        bodies = [json.dumps({"image": png_base64(png), "k": K}).encode() for png in test["image"]]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # by image: the model and the index; by item (a product page's query): the index alone
        by_item = [json.dumps({"item_id": item_id, "k": K}).encode() for item_id in test["item_id"]]
        row: dict[str, Any] = {"serve_start_s": STARTS[log.name]}
        for prefix, queries in (("", bodies), ("item_", by_item)):
            measured = load(
                f"{url}/similar", headers, queries, args.clients, args.seconds, server_pid=server.pid
            )
            if measured["errors"]:
                raise SystemExit(f"{measured['errors']} requests failed: see {log}")
            row |= {f"{prefix}{name}": measured[name] for name in ("p50_ms", "p99_ms", "rps")}
        row["server_RSS_MB"] = memory_kib("VmRSS", str(server.pid)) / 1024
        new = refresh_items(args.source, args.refresh_items, seed=7)
        seconds, answer = timed(lambda: add_missing_items(url, admin_token, new))
        assert answer["added"] == len(new), answer
        served = requests.get(
            f"{url}/admin/items", headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
        )
        assert len(served.json()["item_ids"]) == len(items) + len(new)
        row |= {
            "refresh_s": seconds,
            "refresh_items_per_s": len(new) / seconds,
            "RSS_after_refresh_MB": memory_kib("VmRSS", str(server.pid)) / 1024,
        }
        return row
    finally:
        stop(server)


def conditions() -> str:
    load1, load5, load15 = os.getloadavg()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, nproc {os.cpu_count()}, "
        f"load average {load1:.2f} {load5:.2f} {load15:.2f}"
    )


PIPELINE_COLUMNS = {
    "items": "{:,}",
    "served_kind": "{}",
    "ingest_s": "{:.1f}",
    "table_MB": "{:.0f}",
    "embed_1_items_per_s": "{:.0f}",
    "embed_2_items_per_s": "{:.0f}",
    "read_back_s": "{:.1f}",
    "package_s": "{:.1f}",
    "package_MB": "{:.0f}",
    "serve_start_s": "{:.1f}",
    "p50_ms": "{:.1f}",
    "p99_ms": "{:.1f}",
    "rps": "{:.0f}",
    "item_p50_ms": "{:.1f}",
    "item_p99_ms": "{:.1f}",
    "item_rps": "{:.0f}",
    "server_RSS_MB": "{:.0f}",
    "refresh_s": "{:.1f}",
    "refresh_items_per_s": "{:.0f}",
    "RSS_after_refresh_MB": "{:.0f}",
}
INDEX_COLUMNS = {
    "items": "{:,}",
    "kind": "{}",
    "build_s": "{:.1f}",
    "peak_MB": "{:.0f}",
    "recall_at_10": "{:.4f}",
    "exact_recall_at_10": "{:.4f}",
    "recall_loss": "{:.4f}",
    "overlap_at_10": "{:.3f}",
}


def markdown(rows: list[dict], columns: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(form.format(row[name]) if name in row else "-" for name, form in columns.items())
            + " |"
        )
    return "\n".join(lines)


SERVED_KIND_COSTS = {
    "package_s",
    "package_MB",
    "p50_ms",
    "p99_ms",
    "item_p50_ms",
    "item_p99_ms",
    "server_RSS_MB",
    "refresh_items_per_s",
    "RSS_after_refresh_MB",
}


def plot(pipeline: list[dict], indexes: list[dict], path: Path, note: str) -> None:
    """Each cost against catalogue size, log-log, one panel per kind of cost."""
    from simrec.infra.plots import plt

    figure, axes = plt.subplots(2, 3, figsize=(13, 9.5), layout="constrained")
    sizes = [row["items"] for row in pipeline]
    panels = {
        (0, 0): ("seconds", {"ingest": "ingest_s", "read back": "read_back_s", "package": "package_s"}),
        (0, 1): (
            "items/s",
            {
                "embed local[1]": "embed_1_items_per_s",
                "embed local[2]": "embed_2_items_per_s",
                "refresh": "refresh_items_per_s",
            },
        ),
        (1, 0): (
            "ms at 8 clients",
            {
                "by image p50": "p50_ms",
                "by image p99": "p99_ms",
                "by item p50": "item_p50_ms",
                "by item p99": "item_p99_ms",
            },
        ),
        (1, 1): (
            "MB",
            {
                "tables": "table_MB",
                "package": "package_MB",
                "server RSS": "server_RSS_MB",
                "RSS after refresh": "RSS_after_refresh_MB",
            },
        ),
    }
    served_kinds = list(dict.fromkeys(row.get("served_kind", "") for row in pipeline))
    for (row, column), (unit, series) in panels.items():
        axis = axes[row][column]
        for label, key in series.items():
            if key not in SERVED_KIND_COSTS:
                axis.plot(sizes, [r.get(key, np.nan) for r in pipeline], marker="o", label=label)
                continue
            for kind in served_kinds:  # a package's costs depend on its index kind: one line per kind
                mine = [r for r in pipeline if r.get("served_kind", "") == kind]
                name = f"{label} ({kind})" if kind else label
                axis.plot(
                    [r["items"] for r in mine], [r.get(key, np.nan) for r in mine], marker="o", label=name
                )
        axis.set(ylabel=unit)
    for kind in dict.fromkeys(r["kind"] for r in indexes):
        mine = [r for r in indexes if r["kind"] == kind]
        axes[0][2].plot([r["items"] for r in mine], [r["build_s"] for r in mine], marker="o", label=kind)
        axes[1][2].plot([r["items"] for r in mine], [r["peak_MB"] for r in mine], marker="o", label=kind)
    axes[0][2].set(ylabel="index build seconds")
    axes[1][2].set(ylabel="index build peak MB")
    for axis in axes.flat:
        axis.set(xscale="log", yscale="log", xlabel="catalogue items")
        axis.grid(alpha=0.3, which="both")
        # below the panel, not over it: a legend inside hid points wherever matplotlib placed it
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    figure.suptitle(f"simrec cost against catalogue size\n{note}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="catalogue sizes, e.g. 70k,250k,1M (default: those; --quick: 3k)")
    parser.add_argument("--quick", action="store_true", help="one small size, the hnsw kind, short loads")
    parser.add_argument("--source", default=SOURCE, help="folder of the four Fashion-MNIST IDX files")
    parser.add_argument(
        "--package",
        type=Path,
        help="a package whose model embeds the catalogues (e.g. .simrec/serve/packages/simrec-v1)",
    )
    parser.add_argument("--slots", default="1,2", help="Spark local task slots the embedding runs on")
    parser.add_argument(
        "--embed-sample",
        type=int,
        default=100_000,
        help="items embedded to measure every slot count but the last (which embeds the whole catalogue)",
    )
    parser.add_argument("--kinds", default="hnsw,hnsw_sq8,ivfpq", help="index kinds built and measured")
    parser.add_argument("--serve-kind", default="hnsw", help="the kind packaged, served and refreshed")
    parser.add_argument("--queries", type=int, default=1000, help="test items asked for recall and overlap")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds of serving load")
    parser.add_argument("--refresh-items", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".simrec" / "bench" / "scale")
    parser.add_argument("--json", type=Path, help="write the rows here (default: WORKDIR/scale.json)")
    parser.add_argument("--plot", type=Path, help="the log-log plot (default: WORKDIR/scale.png)")
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="an earlier run's JSON whose rows join this run's table and plot (repeatable)",
    )
    parser.add_argument("--no-run", action="store_true", help="measure nothing: table and plot --include")
    parser.add_argument("--keep", action="store_true", help="keep each size's lake and package")
    args = parser.parse_args()
    if args.quick:
        args.sizes = args.sizes or "3k"
        args.kinds, args.serve_kind = args.serve_kind, args.serve_kind
        args.queries, args.seconds = min(args.queries, 200), 3.0
        args.refresh_items = min(args.refresh_items, 500)
    sizes = [] if args.no_run else [parse_size(text) for text in (args.sizes or "70k,250k,1M").split(",")]
    if sizes and args.package is None:
        parser.error("--package is required unless --no-run")
    if args.embed_sample < 1:
        parser.error(f"--embed-sample must be at least 1, got {args.embed_sample}")
    if args.serve_kind not in args.kinds.split(","):
        parser.error(f"--serve-kind {args.serve_kind} must be one of --kinds")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = conditions()
    print(f"start: {started}", flush=True)
    pipeline, indexes = [], []
    for size in sizes:
        workdir = args.workdir / str(size)
        shutil.rmtree(workdir, ignore_errors=True)
        row, index_rows, package = pipeline_costs(args, size, workdir)
        row |= serving_costs(args, package, workdir)
        pipeline.append(row)
        indexes += index_rows
        print(f"{size}: {json.dumps(row)}", flush=True)
        if not args.keep:
            shutil.rmtree(workdir)
    ended = conditions()
    runs = [f"run ended {ended}"] if sizes else []
    for earlier in args.include:
        before = json.loads(earlier.read_text())
        pipeline += before["pipeline"]
        indexes += before["indexes"]
        print(f"included from {earlier}: {before['started']} to {before['ended']}")
        runs.append(f"run ended {before['ended']}")
    pipeline.sort(key=lambda row: row["items"])
    indexes.sort(key=lambda row: row["items"])
    note = "\n".join(runs) + f"\n{args.clients} clients, top-{K}"
    print(f"end: {ended}\n")
    print(markdown(pipeline, PIPELINE_COLUMNS) + "\n")
    print(markdown(indexes, INDEX_COLUMNS))
    results = {
        "started": started,
        "ended": ended,
        "args": vars(args),
        "pipeline": pipeline,
        "indexes": indexes,
    }
    (args.json or args.workdir / "scale.json").write_text(json.dumps(results, indent=1, default=str))
    plot(pipeline, indexes, args.plot or args.workdir / "scale.png", note)
    print(f"\nplot: {args.plot or args.workdir / 'scale.png'}")


if __name__ == "__main__":
    sys.exit(main())
