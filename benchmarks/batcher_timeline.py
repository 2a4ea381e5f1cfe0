"""Benchmark: where `simrec serve`'s model threads spend a closed-loop load (issue #23: at 8 clients the
server used ~1.3 of 2 cores). Starts the ONNX server with its Batcher timed (timestamps only, behaviour
unchanged), loads it with benchmarks/serve.py's client, and prints per model thread: how busy it was,
its CPU per batch against the batch's wall time (the rest: waiting for a CPU, from /proc's schedstat,
or for the GIL), and the hand-back bubble: a thread that has finished a batch gets the next one only
when the event loop runs Batcher._finish, so while requests wait for it the thread idles.
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
    """`simrec ARGV` (serve) with Batcher._compute and Batcher._finish timed; the records go to
    $SIMREC_BATCHER_TIMELINE when the server stops. switch_interval: the GIL's, if above 0."""
    if switch_interval > 0:
        sys.setswitchinterval(switch_interval)
    import simrec.serving.batcher as batcher
    from simrec.cli import main

    computed: dict[int, tuple] = {}
    finished: dict[int, tuple] = {}
    compute, finish = batcher._compute, batcher.Batcher._finish

    def timed_compute(jobs: list) -> list:
        wall, cpu, queued = time.perf_counter(), time.thread_time(), _run_queue_wait()
        try:
            return compute(jobs)
        finally:
            computed[id(jobs)] = (
                threading.current_thread().name,
                len(jobs),
                wall,
                time.perf_counter(),
                time.thread_time() - cpu,
                _run_queue_wait() - queued,
            )

    def timed_finish(self, loop, jobs, done) -> None:
        finished[id(jobs)] = (time.perf_counter(), len(self._pending))
        finish(self, loop, jobs, done)

    def write(*_: object) -> None:
        keys = [key for key in computed if key in finished]
        Path(os.environ[TIMELINE]).write_text(json.dumps([computed[key] + finished[key] for key in keys]))
        os._exit(0)

    batcher._compute, batcher.Batcher._finish = timed_compute, timed_finish
    # uvicorn handles SIGTERM, shuts down, then restores this handler and raises the signal again
    signal.signal(signal.SIGTERM, write)
    sys.argv = ["simrec", *argv]
    main()


def summarise(records: list[list], seconds: float) -> None:
    end = max(record[3] for record in records)
    # (thread, jobs, start, end, cpu, run-queue wait, finish, waiting requests) of the measured seconds
    records = sorted((r for r in records if r[2] >= end - seconds), key=lambda r: r[2])
    wall = end - min(record[2] for record in records)
    threads = sorted({record[0] for record in records})
    sizes = [record[1] for record in records]
    print(f"{len(records)} batches, {sum(sizes)} requests in {wall:.1f} s, mean batch {np.mean(sizes):.2f}")
    bubble = 0.0
    for thread in threads:
        mine = [record for record in records if record[0] == thread]
        busy = sum(r[3] - r[2] for r in mine)
        cpu = sum(r[4] for r in mine)
        queued = sum(r[5] for r in mine)
        n, requests = len(mine), sum(r[1] for r in mine)
        # wall = CPU + waiting for a CPU + waiting for the GIL, but on a VM the first two overlap (steal
        # time): they are printed, the GIL's part is not derived from them
        print(
            f"  {thread}: busy {100 * busy / wall:.0f} % of the time; per batch: wall"
            f" {1e3 * busy / n:.2f} ms, CPU {1e3 * cpu / n:.2f} ms, runnable but not running"
            f" {1e3 * queued / n:.2f} ms; CPU per request {1e3 * cpu / requests:.2f} ms"
        )
        # idle from a batch's end to the thread's next batch although requests were waiting at _finish
        bubble += sum(b[2] - a[3] for a, b in itertools.pairwise(mine) if a[7] > 0)
    hand_back = np.array([record[6] - record[3] for record in records]) * 1e3
    waiting = sum(record[7] > 0 for record in records)
    thread_seconds = wall * len(threads)
    print(
        f"  batch end -> event loop runs _finish: median {np.median(hand_back):.2f} ms, p90"
        f" {np.percentile(hand_back, 90):.2f} ms; requests waited at"
        f" {100 * waiting / len(records):.0f} % of them"
    )
    print(
        f"  hand-back bubble (a model thread idle while requests waited for the loop to hand them over):"
        f" {bubble:.2f} s of {thread_seconds:.1f} thread-seconds ({100 * bubble / thread_seconds:.0f} %)"
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
