"""Benchmark: the serve image's cold start, from `podman run` to `/v2/health/ready` answering 200 with a
package loaded, as a KServe replica started on demand would see it.

The package is mounted read-only where KServe's storage initializer puts the registered model
(/mnt/models/artifacts/package, the image's default command), the root filesystem is read-only, and the
container runs on the host's network. Each round starts a new container (the image's layers are in the
local store, as on a node that has pulled the image before).

    .envs/control/bin/python benchmarks/container_start.py [--package DIR] [--image TAG] [--rounds 3]

--package defaults to the newest package the local server holds (.simrec/serve/packages/, after a
`simrec run`); --image to the local build of the serve image (scripts/build-images --local-base serve)."""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from simrec.runner.containers import engine_environment

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
MOUNT = "/mnt/models/artifacts/package"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return 0


def start_once(image: str, package: Path, timeout_s: float = 120.0) -> dict[str, float]:
    port = _free_port()
    name = f"simrec-cold-start-{port}"
    command = ["podman", "run", "--detach", "--rm", f"--name={name}", "--network=host", "--read-only"]
    command += ["--tmpfs=/tmp", f"--volume={package}:{MOUNT}:ro", "--env=SIMREC_SERVE_TOKEN=benchmark"]
    command += [image, "serve", "--host", "127.0.0.1", "--port", str(port), "--package", MOUNT]
    started = time.perf_counter()
    subprocess.run(command, env=engine_environment(), check=True, capture_output=True, timeout=120)
    created = time.perf_counter() - started
    live = None
    try:
        while time.perf_counter() - started < timeout_s:
            if live is None and _status(f"http://127.0.0.1:{port}/v2/health/live") == 200:
                live = time.perf_counter() - started
            if _status(f"http://127.0.0.1:{port}/v2/health/ready") == 200:
                return {"run": created, "live": live or 0.0, "ready": time.perf_counter() - started}
            time.sleep(0.05)
        raise SystemExit(f"{image} was not ready within {timeout_s:.0f} s")
    finally:
        subprocess.run(["podman", "rm", "--force", name], env=engine_environment(), capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path)
    parser.add_argument("--image", default=f"localhost/simrec/serve:{VERSION}-local")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    package = args.package
    if package is None:
        found = sorted((ROOT / ".simrec" / "serve" / "packages").rglob("recommender.json"))
        if not found:
            raise SystemExit("no package: give --package DIR, or run `simrec run` first")
        package = max(found, key=lambda p: p.stat().st_mtime).parent
    size = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", args.image],
        env=engine_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"image {args.image}: {int(size) / 1e6:.0f} MB; package {package}")
    rounds = [start_once(args.image, package.resolve()) for _ in range(args.rounds)]
    print(f"{'round':>5} {'podman run (s)':>15} {'live (s)':>9} {'ready (s)':>10}")
    for index, times in enumerate(rounds, 1):
        print(f"{index:>5} {times['run']:>15.2f} {times['live']:>9.2f} {times['ready']:>10.2f}")
    ready = [r["ready"] for r in rounds]
    print(json.dumps({"image": args.image, "ready_median_s": round(statistics.median(ready), 2)}))


if __name__ == "__main__":
    main()
