"""Benchmark: `simrec serve` on ONNX Runtime (the serve image) and on TensorFlow (`--runtime keras`, the
same package's embedding.keras), side by side, and stock `mlflow models serve` of a naive reference
pyfunc, top-5 on the real 70k-item Fashion-MNIST catalogue, at 1 and 8 concurrent clients, in one run;
at 8 clients the ONNX and TensorFlow servers run side by side, loads alternated over --rounds (with
--metrics-off, also an ONNX server without its Prometheus metrics); with --overload, also 64 and 256
clients against the ONNX server (load shedding: 503 share, p99 of the accepted requests), each followed
at once by one client, to see it recover. Each server's start (process start to /v2/health/ready,
package loaded and warmed up) is printed too.

Run in the steps environment (it has full MLflow for the reference, and TensorFlow to build the package);
the ONNX server runs in .envs/serve, the TensorFlow one in --tensorflow-python's environment, which needs
TensorFlow and the serve lock's HTTP stack (uvicorn with uvloop and httptools, prometheus-client) for a
fair comparison: the serve environment as it was before TensorFlow left it, or the steps environment
(which lacks uvloop/httptools: slower HTTP, say so when you quote it).
    .envs/steps/bin/python benchmarks/serve.py [--seconds 15] [--workdir .simrec/bench/serve] [--overload]
        [--no-reference] [--tensorflow-python PATH] [--metrics-off]

No trained model is needed: the package is built from an *untrained* model with the train component's
default architecture and inference options (strong, 128-d, flip averaging: two forward passes per image;
descriptor fusion as the defaults set it). A --workdir per set of defaults: the package is reused.
Latency does not depend on the weights, only on the architecture and the catalogue size.
The reference is what a first design would do: an MLflow PythonModel that takes base64 PNGs in a
DataFrame, runs Keras `model.predict` and an exact numpy search over all 70k embeddings. Both servers
answer the same base64 PNGs (test images); the servers run one after the other, alone, on this machine,
and the client runs here too, on the same 2 cores (its CPU is reported). Each client sends its next
request as soon as an answer arrives; under overload, once with clients that wait as a 503's
Retry-After says (as KServe's activator and well-behaved clients do), once with impatient ones that
retry at once. Latencies are those of the answered (200) requests."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("SIMREC_ENVS_DIR") or ROOT / ".envs")
SOURCE = "/usr/share/datasets/fashion-mnist"
K = 5
QUERIES = 200


def build(workdir: Path) -> tuple[Path, list[str]]:
    """The 70k package (once; reused by later runs) and the reference model's files."""
    package = workdir / "package"
    if (package / "recommender.json").exists():
        return package, _queries(package)
    import tensorflow as tf

    from simrec.data.catalogue import Items, load_fashion_mnist
    from simrec.embedding.keras_model import EmbeddingModel
    from simrec.recommender.package import write_package
    from simrec.train.model import build_embedding_model, inference_model
    from simrec.train.params import TrainParams

    started = time.perf_counter()
    splits, _ = load_fashion_mnist(SOURCE, None, workdir / "downloads")
    items = Items.concat([splits["train"], splits["test"]]).encoded()
    tf.keras.utils.set_random_seed(0)
    model_file = workdir / "model" / "embedding.keras"
    model_file.parent.mkdir(parents=True, exist_ok=True)
    if not model_file.exists():  # the architecture and inference options the train step saves by default
        defaults = TrainParams.component_defaults()
        embedder = build_embedding_model(defaults.architecture, defaults.embedding_dim, defaults.dropout)
        inference_model(embedder, defaults.flip_average, defaults.pixel_weight, defaults.hog_weight).save(
            model_file
        )
    from simrec.data.codec import decode_png

    vectors_file = workdir / "model" / "vectors.npy"
    if vectors_file.exists():  # an interrupted earlier build
        vectors = np.load(vectors_file)
    else:
        pixels = np.stack([decode_png(png) for png in items["image"]])
        vectors = EmbeddingModel(model_file).embed_pixels(pixels)
        np.save(vectors_file, vectors)
    np.save(workdir / "model" / "item_ids.npy", items["item_id"].to_numpy().astype(str))
    partial = workdir / "package.partial"  # renamed when complete: a failed build is never reused
    shutil.rmtree(partial, ignore_errors=True)
    test_rows = np.flatnonzero(items["item_id"].str.startswith("test-").to_numpy())
    # agreement_rows: the ONNX model against Keras on the 10,000 test images, as evaluate measures it
    write_package(
        partial,
        model_file,
        items,
        vectors,
        smoke_items=["test-000000", "train-000000"],
        agreement_rows=test_rows,
    )
    partial.rename(package)
    agreement = json.loads((package / "recommender.json").read_text())["onnx"]["agreement"]
    print(f"ONNX vs Keras over {agreement['images']} test images: {agreement}")
    print(f"built the {len(items)}-item package in {time.perf_counter() - started:.0f} s")
    return package, _queries(package)


def _queries(package: Path) -> list[str]:
    import pandas as pd

    items = pd.read_parquet(package / "items.parquet", columns=["item_id", "image"])
    test = items[items["item_id"].str.startswith("test-")].iloc[:QUERIES]
    return [base64.b64encode(bytes(png)).decode() for png in test["image"]]


REFERENCE = """
import base64, io
import mlflow.pyfunc
import numpy as np
import pandas as pd
from PIL import Image


class NaiveSimilar(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import tensorflow as tf
        import simrec.embedding.descriptors  # registers the HOG layer a model with hog_weight > 0 holds

        self.model = tf.keras.models.load_model(context.artifacts["model"], compile=False)
        self.vectors = np.load(context.artifacts["vectors"])
        self.ids = np.load(context.artifacts["item_ids"])

    def predict(self, context, model_input, params=None):
        images = np.stack([
            np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("L"), dtype=np.float32)
            for b in model_input["image"]
        ])[..., None]
        embeddings = self.model.predict(images, verbose=0)
        scores = embeddings @ self.vectors.T
        top = np.argsort(-scores, axis=1)[:, :5]
        return pd.DataFrame({
            "item_ids": [list(self.ids[row]) for row in top],
            "scores": [list(map(float, s[row])) for s, row in zip(scores, top)],
        })
"""


def save_reference(workdir: Path) -> Path:
    import mlflow.pyfunc

    target = workdir / "reference-pyfunc"
    if (target / "MLmodel").exists():
        return target
    code = workdir / "naive_similar.py"
    code.write_text(REFERENCE)
    sys.path.insert(0, str(workdir))
    from naive_similar import NaiveSimilar  # type: ignore[import-not-found]

    files = {"model": "embedding.keras", "vectors": "vectors.npy", "item_ids": "item_ids.npy"}
    artifacts = {name: str(workdir / "model" / file) for name, file in files.items()}
    mlflow.pyfunc.save_model(target, python_model=NaiveSimilar(), artifacts=artifacts, code_paths=[str(code)])
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


STARTS: dict[str, float] = {}  # log file name -> seconds from process start to ready


def start(command: list[str], url: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{command[0]} exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                STARTS[log.name] = time.perf_counter() - started
                return process
        except requests.RequestException:
            pass
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    sys.exit(f"not ready in 300 s: {command}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(all threads, main thread) CPU seconds of a process: the server's work per request, which the
    machine's other load does not inflate as it does wall time. The main thread is uvicorn's event loop
    (HTTP, JSON, validation, PNG decoding); the model threads and ORT's or TensorFlow's pools are the rest."""

    def ticks(stat: Path) -> int:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))

    tasks = Path(f"/proc/{pid}/task")
    per_second = os.sysconf("SC_CLK_TCK")
    total = sum(ticks(task / "stat") for task in tasks.iterdir() if (task / "stat").exists())
    return total / per_second, ticks(tasks / str(pid) / "stat") / per_second


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(30)


def load(
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    clients: int,
    seconds: float,
    warm_up_s: float = 2.0,
    patient: bool = True,
    server_pid: int | None = None,
) -> dict:
    """`clients` concurrent connections, each sending its next request when the previous answer arrived
    (after a 503, when its Retry-After has passed, unless not `patient`), measured after `warm_up_s`.
    One asyncio client (aiohttp): it needs a few % of a core, where 8 `requests` threads needed ~40% of
    one of the two cores the server runs on, and their GIL contention added to the measured latency."""
    return asyncio.run(_load(url, headers, bodies, clients, seconds, warm_up_s, patient, server_pid))


async def _load(
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    clients: int,
    seconds: float,
    warm_up_s: float,
    patient: bool,
    server_pid: int | None,
) -> dict:
    import aiohttp

    def fresh() -> dict:
        return {"latencies": [], "shed": 0, "errors": 0}

    async def client(session: aiohttp.ClientSession, number: int, stop_at: float, record: dict) -> None:
        i = number
        while (sent := time.perf_counter()) < stop_at:
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
                await response.read()
            if response.status == 200:
                record["latencies"].append(time.perf_counter() - sent)
            elif response.status == 503:
                record["shed"] += 1
                if patient:
                    wait = float(response.headers.get("Retry-After", 0))
                    await asyncio.sleep(max(0.0, min(wait, stop_at - time.perf_counter())))
            else:
                record["errors"] += 1
            i += clients

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        warm_up = fresh()  # connections, first calls
        stop_at = time.perf_counter() + warm_up_s
        await asyncio.gather(*(client(session, n, stop_at, warm_up) for n in range(clients)))
        record = fresh()
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        server_before = cpu_seconds(server_pid) if server_pid else (0.0, 0.0)
        started = time.perf_counter()
        await asyncio.gather(*(client(session, n, started + seconds, record) for n in range(clients)))
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        server_after = cpu_seconds(server_pid) if server_pid else (0.0, 0.0)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    ok_ms = np.array(record["latencies"]) * 1000
    sent = len(ok_ms) + record["shed"] + record["errors"]
    return {
        "requests": sent,
        "errors": record["errors"],  # neither 200 nor 503
        "shed_pct": 100 * record["shed"] / sent,
        "rps": len(ok_ms) / wall,  # answered
        "p50_ms": float(np.percentile(ok_ms, 50)),
        "p99_ms": float(np.percentile(ok_ms, 99)),
        "client_cpu_pct": 100 * cpu / wall,
        # server CPU per answered request, and the event loop's share of it (nan: not measured)
        "server_cpu_ms": 1000 * (server_after[0] - server_before[0]) / len(ok_ms) if server_pid else np.nan,
        "loop_cpu_ms": 1000 * (server_after[1] - server_before[1]) / len(ok_ms) if server_pid else np.nan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per configuration")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".simrec" / "bench" / "serve")
    parser.add_argument("--overload", action="store_true", help="also 64 and 256 clients (load shedding)")
    parser.add_argument("--no-reference", action="store_true", help="skip mlflow models serve")
    parser.add_argument("--rounds", type=int, default=3, help="alternated 8-client rounds, server by server")
    parser.add_argument(
        "--tensorflow-python",
        type=Path,
        default=ENVS / "steps/bin/python",
        help="the Python that runs simrec serve --runtime keras (default: the steps environment's)",
    )
    parser.add_argument("--metrics-off", action="store_true", help="also an ONNX server with --no-metrics")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    package, images = build(args.workdir)
    reference = None if args.no_reference else save_reference(args.workdir)
    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())

    token = "bench-token"
    similar = [json.dumps({"image": image, "k": K}).encode() for image in images]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    results = {}
    # The servers side by side, 8-client loads alternated round by round: the machine's speed drifts by
    # tens of % within minutes, so one server after the other would compare the drift, not the servers.
    servers = {
        "onnx": (ENVS / "serve/bin/python", []),
        "tensorflow": (args.tensorflow_python, ["--runtime", "keras"]),
    }
    if args.metrics_off:
        servers["onnx, metrics off"] = (ENVS / "serve/bin/python", ["--no-metrics"])
    urls, pids, processes = {}, {}, []
    try:
        for name, (python, flags) in servers.items():
            port = free_port()
            command = [str(python), "-m", "simrec", "serve", "--package", str(package)]
            log = args.workdir / f"simrec-serve-{name.replace(', ', '-').replace(' ', '-')}.log"
            ready = f"http://127.0.0.1:{port}/v2/health/ready"
            command += ["--port", str(port), *flags]
            processes.append(start(command, ready, log, env | {"SIMREC_SERVE_TOKEN": token}))
            urls[name], pids[name] = f"http://127.0.0.1:{port}", processes[-1].pid
        url = urls["onnx"]
        for name in servers:
            results[(f"simrec serve /similar, {name}", 1)] = load(
                f"{urls[name]}/similar", headers, similar, 1, args.seconds, server_pid=pids[name]
            )
        rounds: dict[str, list[dict]] = {name: [] for name in servers}
        for number in range(args.rounds):
            for name in servers:
                rounds[name].append(
                    load(f"{urls[name]}/similar", headers, similar, 8, args.seconds, server_pid=pids[name])
                )
                results[(f"  round {number + 1}, {name}", 8)] = rounds[name][-1]
        for name in servers:
            median = {key: float(np.median([r[key] for r in rounds[name]])) for key in rounds[name][0]}
            results[(f"simrec serve /similar, {name} (median of rounds)", 8)] = median
        infer = [
            json.dumps(
                {
                    "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}],
                    "parameters": {"k": K},
                }
            ).encode()
            for image in images
        ]
        for name in servers:
            results[(f"simrec serve v2 infer, {name}", 8)] = load(
                f"{urls[name]}/v2/models/simrec/infer", headers, infer, 8, args.seconds, server_pid=pids[name]
            )
        if args.overload:
            for clients, patient in ((64, True), (256, True), (64, False), (256, False)):
                kind = "overload, Retry-After" if patient else "overload, impatient"
                results[(f"simrec serve /similar, {kind}", clients)] = load(
                    f"{url}/similar", headers, similar, clients, args.seconds, patient=patient
                )
                # right after, without a warm-up: is one client answered as fast as before?
                results[(f"  one client right after those {clients} ({kind})", 1)] = load(
                    f"{url}/similar", headers, similar, 1, 3.0, warm_up_s=0
                )
        (args.workdir / "metrics.txt").write_text(requests.get(f"{url}/metrics", timeout=10).text)
    finally:
        for process in processes:
            stop(process)
    if reference is not None:
        run_reference(reference, images, env, args, results)
    print("uptime after: ", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())

    print(f"\ntop-{K} over {70_000} items, {args.seconds:.0f} s per row, {os.cpu_count()} CPU cores")
    columns = (
        ("clients", 8),
        ("requests", 10),
        ("errors", 8),
        ("503 %", 7),
        ("req/s", 9),
        ("p50 ms", 9),
        ("p99 ms", 9),
    )
    extra = f"{'client CPU':>12}{'server CPU ms/req':>19}{'of it loop':>12}"
    print(f"{'server':<66}" + "".join(f"{name:>{width}}" for name, width in columns) + extra)
    for (name, clients), r in results.items():
        print(
            f"{name:<66}{clients:>8}{r['requests']:>10}{r['errors']:>8}{r['shed_pct']:>7.1f}{r['rps']:>9.1f}"
            f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['client_cpu_pct']:>11.0f}%"
            f"{r.get('server_cpu_ms', np.nan):>19.2f}{r.get('loop_cpu_ms', np.nan):>12.2f}"
        )
    print(f"\n/metrics after the runs above (ONNX server): {args.workdir / 'metrics.txt'}")
    print("start to /v2/health/ready: " + ", ".join(f"{n} {s:.2f} s" for n, s in STARTS.items()))
    ours = results[("simrec serve /similar, onnx (median of rounds)", 8)]["rps"]
    tensorflow = results[("simrec serve /similar, tensorflow (median of rounds)", 8)]["rps"]
    print(f"throughput at 8 clients: ONNX Runtime {ours / tensorflow:.1f}x TensorFlow")
    if reference is not None:
        theirs = results[("mlflow models serve (reference)", 8)]["rps"]
        print(f"throughput at 8 clients: {ours / theirs:.1f}x the reference")


def run_reference(
    reference: Path, images: list[str], env: dict[str, str], args: argparse.Namespace, results: dict
) -> None:
    """mlflow models serve of the naive pyfunc, at 1 and 8 clients."""
    port = free_port()
    mlflow = start(
        [
            str(ENVS / "steps/bin/mlflow"),
            "models",
            "serve",
            "-m",
            str(reference),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        f"http://127.0.0.1:{port}/ping",
        args.workdir / "mlflow-serve.log",
        env | {"PATH": f"{ENVS / 'steps/bin'}:{os.environ['PATH']}"},  # it runs `uvicorn` from PATH
    )
    try:
        bodies = [
            json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i]]}}).encode() for i in images
        ]
        for clients in (1, 8):
            results[("mlflow models serve (reference)", clients)] = load(
                f"http://127.0.0.1:{port}/invocations",
                {"Content-Type": "application/json"},
                bodies,
                clients,
                args.seconds,
            )
    finally:
        stop(mlflow)


if __name__ == "__main__":
    main()
