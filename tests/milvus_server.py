"""A real Milvus protocol server for the tests: milvus-lite's, started as its own process from its own
environment (.envs/milvus-lite, scripts/setup-envs milvus-lite), as a Milvus cluster would be reached from
a pod. The steps tests (the vector engine adapter) and the serve tests (engine-backed packages served) use
it with their own environment's pymilvus client. (Not named milvus_lite.py: on the tests path that would
hide the milvus_lite package pymilvus imports for local .db URIs.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from serve_helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(os.environ.get("SIMREC_MILVUS_LITE", ROOT / ".envs/milvus-lite/bin/milvus-lite"))


def _wait_for(port: int, server: subprocess.Popen, log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"milvus-lite exited with {server.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"milvus-lite did not listen on {port} within {seconds} s:\n{log.read_text()[-2000:]}")


def start_milvus_lite(folder: Path, port: int | None = None) -> tuple[str, subprocess.Popen]:
    """A milvus-lite server on loopback (on `port`, else a free one), its data in `folder`: (URI,
    process). Started again on the same folder and port, it serves the same collections."""
    if not SERVER.exists():
        pytest.skip(f"no milvus-lite server at {SERVER} (scripts/setup-envs milvus-lite)")
    port = port or free_port()
    log = folder / f"server-{port}.log"
    with log.open("a") as out:
        server = subprocess.Popen(
            [
                str(SERVER),
                "server",
                "--data-dir",
                str(folder / "data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},  # its own env only
        )
    try:
        _wait_for(port, server, log)
    except BaseException:
        stop(server)
        raise
    return f"http://127.0.0.1:{port}", server


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
    server.wait(timeout=30)


@contextmanager
def milvus_lite(folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A milvus-lite server on loopback for the duration, its data in `folder`: (URI, process)."""
    uri, server = start_milvus_lite(folder)
    try:
        yield uri, server
    finally:
        stop(server)


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of a milvus-lite server of this module's own (a plugin of tests/conftest.py)."""
    folder = tmp_path_factory.mktemp("milvus")
    with milvus_lite(folder) as (uri, _):
        yield uri
    shutil.rmtree(folder, ignore_errors=True)
