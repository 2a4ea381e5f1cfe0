"""A real `simrec serve` process on a free loopback port, for the serve tests (and the steps tests of the
clients that talk to a server: refresh)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

import simrec

SRC = str(Path(simrec.__file__).resolve().parents[1])  # the simrec these tests import, also for servers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(token: str | None, admin_token: str | None = None) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": SRC, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for variable, value in (("SIMREC_SERVE_TOKEN", token), ("SIMREC_ADMIN_TOKEN", admin_token)):
        env.pop(variable, None)
        if value:
            env[variable] = value
    return env


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class Server:
    url: str
    token: str | None
    admin_token: str | None
    process: subprocess.Popen
    log: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)

    @property
    def admin_auth(self) -> dict[str, str]:
        return bearer(self.admin_token)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """With each plane's own token, unless the test gives headers of its own."""
        headers = (self.admin_auth if path.startswith("/admin/") else self.auth) | kwargs.pop("headers", {})
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def similar(self, **body) -> list[str]:
        response = self.post("/similar", json=body)
        assert response.status_code == 200, response.text
        return [item["item_id"] for item in response.json()["items"]]

    def stop(self) -> None:
        self.session.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    folder: Path,
    token: str | None,
    *args: str,
    admin_token: str | None = None,
    wait_ready: bool = True,
    python: str = sys.executable,
) -> Server:
    """`python -m simrec serve ...` in this interpreter's environment (the serve env's tests), or in the
    environment of `python` (another environment's tests); admin routes only with an admin_token."""
    port = free_port()
    log = folder / f"server-{port}.log"
    command = [python, "-m", "simrec", "serve", "--port", str(port), *args]
    if not token:
        command.append("--no-auth")
    with log.open("wb") as out:
        env = server_env(token, admin_token)
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", token, admin_token, process, log)
    deadline = time.monotonic() + 120
    path = "/v2/health/ready" if wait_ready else "/v2/health/live"
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(server.url + path, timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"server not {path} in 120 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
