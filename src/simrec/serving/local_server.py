"""The local `simrec serve` that deploy and rollback talk to when no server URL is given: started detached
(it outlives the command that started it), with its pid or container, port, tokens and log in a state
folder, loading packages only from the state folder's packages/. A process in the serve environment, or
a container of the serve image (where the runner runs steps in containers)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from simrec.infra.files import write_json_atomic
from simrec.infra.paths import CHECKOUT, envs_dir
from simrec.serving.admin_client import DeployError
from simrec.serving.cli import ADMIN_TOKEN_VARIABLE, TOKEN_VARIABLE

PACKAGES = "packages"  # the local server's package root, inside its state folder


def default_state_dir() -> Path:
    return Path(os.environ.get("SIMREC_SERVE_STATE") or CHECKOUT / ".simrec" / "serve")


@dataclass(frozen=True)
class LocalServer:
    url: str
    token: str  # the query routes'
    admin_token: str


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/health/live", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _local_token(state_dir: Path, variable: str = TOKEN_VARIABLE, name: str = "token") -> str:
    """$variable, else the state folder's file `name` (created once, readable by the owner only)."""
    if os.environ.get(variable):
        return os.environ[variable]
    path = state_dir / name
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def ensure_local_server(
    state_dir: Path | None = None,
    port: int = 8080,
    host: str = "127.0.0.1",
    timeout_s: float = 120.0,
    image: str | None = None,
) -> LocalServer:
    """The local server recorded in `state_dir` if it answers, else a new detached `simrec serve`: a
    process in the serve environment, or a container of the serve `image` when one is given."""
    state_dir = state_dir or default_state_dir()
    token = _local_token(state_dir)
    admin_token = _local_token(state_dir, ADMIN_TOKEN_VARIABLE, "admin-token")
    record = state_dir / "server.json"
    if record.exists() and _answers(json.loads(record.read_text())["url"]):
        return LocalServer(json.loads(record.read_text())["url"], token, admin_token)
    url = f"http://{host}:{port}"
    if _answers(url):
        raise DeployError(f"another server answers at {url} (not started from {state_dir}); pass --server")
    package_root = state_dir / PACKAGES
    package_root.mkdir(exist_ok=True)
    serve = ["serve", "--host", host, "--port", str(port), "--package-root", str(package_root)]
    tokens = {TOKEN_VARIABLE: token, ADMIN_TOKEN_VARIABLE: admin_token}
    started = (
        _start_container(image, serve, package_root, tokens)
        if image
        else _start_process(serve, state_dir, tokens)
    )
    write_json_atomic(record, {"url": url, "port": port} | started.record)
    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if not started.running() or time.monotonic() > deadline:
            raise DeployError(f"the local server did not start ({started.where}):\n{started.log_tail()}")
        time.sleep(0.3)
    return LocalServer(url, token, admin_token)


@dataclass(frozen=True)
class _Started:
    record: dict[str, Any]  # how server.json finds it again: its pid, or its container
    where: str  # where its log is
    running: Callable[[], bool]
    log_tail: Callable[[], str]


def _start_process(serve: list[str], state_dir: Path, tokens: dict[str, str]) -> _Started:
    log_path = state_dir / "server.log"
    command = [str(envs_dir() / "serve" / "bin" / "python"), "-m", "simrec", *serve]
    with log_path.open("ab") as log:
        # A new session: the server survives this command and Ctrl-C in its terminal.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | tokens,
            start_new_session=True,
        )
    return _Started(
        {"pid": process.pid, "log": str(log_path)},
        f"see {log_path}",
        lambda: process.poll() is None,
        lambda: log_path.read_text(errors="replace")[-2000:],
    )


def _start_container(image: str, serve: list[str], package_root: Path, tokens: dict[str, str]) -> _Started:
    """The serve image's entrypoint (`simrec`) with `serve`, on the host's network, as the image's own
    user, reading packages from the package root (mounted read-only) and writing nowhere else."""
    import docker  # the steps image has it (an MLflow dependency); podman serves the same API

    try:
        client = docker.from_env()
        port = serve[serve.index("--port") + 1]
        container = client.containers.run(
            image,
            serve,
            name=f"simrec-serve-{port}",
            detach=True,
            network_mode="host",
            read_only=True,
            tmpfs={"/tmp": ""},
            volumes={str(package_root): {"bind": str(package_root), "mode": "ro"}},
            environment=tokens,
        )
    except docker.errors.DockerException as exc:
        raise DeployError(f"cannot start the serve image {image}: {exc}") from exc

    def running() -> bool:
        container.reload()
        return container.status in ("created", "running")

    return _Started(
        {"container": container.name, "image": image},
        f"podman logs {container.name}",
        running,
        lambda: container.logs(tail=40).decode(errors="replace"),
    )
