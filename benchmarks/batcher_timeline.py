"""Benchmark: where `simrec serve`'s model threads spend a closed-loop load (issue #23: at 8 clients the
server used ~1.3 of 2 cores). Starts the ONNX server with its batches timed (timestamps only, behaviour
unchanged), loads it with benchmarks/serve.py's client, and prints per model thread: how busy it was,
its CPU per batch against the batch's wall time (the rest: waiting for a CPU, from /proc's schedstat,
or for the GIL), and the idle gaps between its batches. (Before a model thread took its next batch
itself, the gaps held a hand-back bubble: the thread waited for the event loop to hand it the requests
that had arrived meanwhile; docs/serving.md.)
Run in the steps environment (as benchmarks/serve.py):
    .envs/steps/bin/python benchmarks/batcher_timeline.py --package DIR [--clients 8] [--seconds 10]
        [--switch-interval S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("SIMREC_ENVS_DIR") or ROOT / ".envs")
TIMELINE = "SIMREC_BATCHER_TIMELINE"  # where the instrumented server writes its records


def _run_queue_wait() -> float:
    """Seconds this thread has been runnable but not running (/proc schedstat's second field)."""
    with open("/proc/thread-self/schedstat") as stat:
        return int(stat.read().split()[1]) / 1e9


def instrumented_server(switch_interval: float, argv: list[str]) -> None:
    """`simrec ARGV` (serve) with the batcher's _compute timed; the records go to $SIMREC_BATCHER_TIMELINE
    when the server stops. switch_interval: the GIL's, if above 0."""
    if switch_interval > 0:
        sys.setswitchinterval(switch_interval)
    import simrec.serving.batcher as batcher
    from simrec.cli import main

    computed: list[tuple] = []
    compute = batcher._compute

    def timed_compute(jobs: list) -> list:
        wall, cpu, queued = time.perf_counter(), time.thread_time(), _run_queue_wait()
        try:
            return compute(jobs)
        finally:
            computed.append(
                (
                    threading.current_thread().name,
                    len(jobs),
                    wall,
                    time.perf_counter(),
                    time.thread_time() - cpu,
                    _run_queue_wait() - queued,
                )
            )

    def write(*_: object) -> None:
        Path(os.environ[TIMELINE]).write_text(json.dumps(computed))
        os._exit(0)

    batcher._compute = timed_compute
    # uvicorn handles SIGTERM, shuts down, then restores this handler and raises the signal again
    signal.signal(signal.SIGTERM, write)
    sys.argv = ["simrec", *argv]
    main()


def summarise(records: list[list], seconds: float) -> None:
    end = max(record[3] for record in records)
    # (thread, jobs, start, end, cpu, run-queue wait) of the measured seconds
    records = sorted((r for r in records if r[2] >= end - seconds), key=lambda r: r[2])
    wall = end - min(record[2] for record in records)
    threads = sorted({record[0] for record in records})
    sizes = [record[1] for record in records]
    print(f"{len(records)} batches, {sum(sizes)} requests in {wall:.1f} s, mean batch {np.mean(sizes):.2f}")
    for thread in threads:
        mine = [record for record in records if record[0] == thread]
        busy = sum(r[3] - r[2] for r in mine)
        cpu = sum(r[4] for r in mine)
        queued = sum(r[5] for r in mine)
        n, requests = len(mine), sum(r[1] for r in mine)
        gaps = np.array([b[2] - a[3] for a, b in itertools.pairwise(mine)]) * 1e3
        # wall = CPU + waiting for a CPU + waiting for the GIL, but on a VM the first two overlap (steal
        # time): they are printed, the GIL's part is not derived from them
        print(
            f"  {thread}: busy {100 * busy / wall:.0f} % of the time; per batch: wall"
            f" {1e3 * busy / n:.2f} ms, CPU {1e3 * cpu / n:.2f} ms, runnable but not running"
            f" {1e3 * queued / n:.2f} ms; CPU per request {1e3 * cpu / requests:.2f} ms; idle between"
            f" batches: median {np.median(gaps):.2f} ms, p90 {np.percentile(gaps, 90):.2f} ms"
        )


def main() -> None:
    if sys.argv[1:2] == ["--instrumented-server"]:  # how main() below starts the server
        instrumented_server(float(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--switch-interval", type=float, help="the server's sys.setswitchinterval (s)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import serve as bench  # benchmarks/serve.py: its server start, client and package queries

    port, token = bench.free_port(), "bench-token"
    with tempfile.TemporaryDirectory() as folder:
        timeline = Path(folder) / "timeline.json"
        env = os.environ | {
            "PYTHONPATH": str(ROOT / "src"),
            "SIMREC_SERVE_TOKEN": token,
            TIMELINE: str(timeline),
        }
        switch = str(args.switch_interval or 0)
        command = [str(ENVS / "serve/bin/python"), __file__, "--instrumented-server", switch, "serve"]
        command += ["--package", str(args.package), "--port", str(port)]
        server = bench.start(command, f"http://127.0.0.1:{port}/v2/health/ready", Path(folder) / "log", env)
        bodies = [json.dumps({"image": image, "k": 5}).encode() for image in bench._queries(args.package)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        result = bench.load(
            f"http://127.0.0.1:{port}/similar",
            headers,
            bodies,
            args.clients,
            args.seconds,
            server_pid=server.pid,
        )
        bench.stop(server)
        print(f"load average {os.getloadavg()[0]:.2f}; {args.clients} clients: {result['rps']:.0f} req/s,")
        print(
            f"  server CPU {result['server_cpu_ms']:.2f} ms per request (event loop"
            f" {result['loop_cpu_ms']:.2f}), client {result['client_cpu_pct']:.0f} % of a core"
        )
        summarise(json.loads(timeline.read_text()), args.seconds)


if __name__ == "__main__":
    main()
