"""Container mode of the embedded runner: each task's command runs in the task's own image, with podman.

What a pod would get, and no more: the image the IR names (built here by `scripts/build-images
--local-base`, never pulled), the IR's environment (not this shell's), the image's own non-root user, the
task's memory limit and CPUs, the IR's /dev/shm size, and the run's folders (artifacts, lake, MLflow
store, dataset) mounted at the paths the IR names. The image's user must be able to write there: run by
a user (rootless podman) the image's user is that user (keep-id); run as root, the folders are handed to
the image's user before each task, as Kubernetes' fsGroup hands a volume to a pod. (Mapping the image's
user to root instead needs id-mapped image layers, which this machine's kernel refuses.)

The deploy step starts the local server as a container of the serve image: it reaches podman through the
Docker-compatible API socket of `podman system service`, which this module starts for the run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simrec.infra import paths
from simrec.infra.errors import InputError

LOCAL_MARKER = "-local"  # scripts/build-images --local-base: simrec/<image>:<version>-local
SERVE_IMAGE_ENV = "SIMREC_SERVE_IMAGE"  # deploy starts its local server from this image
ENGINE_SOCKET = "/run/simrec/engine.sock"  # where a task finds the container engine's API


def engine_folder() -> Path:
    """Where scripts/setup-containers writes containers.conf (limits that fit this machine, runc) and,
    as root, storage.conf (images kept in the cache)."""
    cache = Path(os.environ.get("SIMREC_CACHE") or Path.home() / ".cache" / "simrec")
    return cache / "containers"


def engine_environment() -> dict[str, str]:
    """This process's environment plus simrec's podman configuration, unless the user set their own."""
    env = dict(os.environ)
    for variable, name in (
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_STORAGE_CONF", "storage.conf"),
    ):
        if variable not in env and (engine_folder() / name).is_file():
            env[variable] = str(engine_folder() / name)
    return env


def _require_podman() -> None:
    if shutil.which("podman") is None:
        raise InputError("container mode needs podman: run scripts/setup-containers")


@dataclass(frozen=True)
class LocalImage:
    reference: str  # as the IR names it
    tag: str  # what runs: the reference itself, or its local build
    id: str
    user: str  # the image's USER, numeric
    created: float  # seconds since the epoch


def image_name(image: str) -> str:
    """`registry/simrec/steps:0.1.0` -> `steps`: the environment and images/ folder standing for it."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def local_build(reference: str) -> str:
    """`registry/simrec/steps:0.1.0` -> `localhost/simrec/steps:0.1.0-local` (scripts/build-images)."""
    tag = reference.split("@", 1)[0].rpartition(":")[2]
    return f"localhost/simrec/{image_name(reference)}:{tag}{LOCAL_MARKER}"


def resolve_image(reference: str) -> LocalImage:
    """The image on this machine standing for `reference`: itself if present, else its local build."""
    image = find_image(reference)
    if image is None:
        raise InputError(
            f"image {reference} is not on this machine (nor its local build {local_build(reference)}): "
            f"build it with scripts/build-images --local-base {image_name(reference)}"
        )
    return image


def find_image(reference: str) -> LocalImage | None:
    _require_podman()
    for candidate in (reference, local_build(reference)):
        found = subprocess.run(
            ["podman", "image", "inspect", candidate],
            env=engine_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if found.returncode == 0:
            (details,) = json.loads(found.stdout)
            user = details["Config"].get("User") or "0"
            if not user.split(":")[0].isdigit():
                raise InputError(f"image {candidate} runs as user {user!r}: a pod needs a numeric USER")
            created = details["Created"]
            return LocalImage(reference, candidate, details["Id"], user, _epoch(created))
    return None


def _epoch(created: str) -> float:
    from datetime import datetime

    # podman prints nanoseconds; Python parses microseconds
    head, _, rest = created.partition(".")
    fraction, zone = (rest[:6], rest.lstrip("0123456789")) if rest else ("0", created[19:])
    return datetime.fromisoformat(f"{head}.{fraction}{zone.replace('Z', '+00:00')}").timestamp()


def build_local(name: str, echo: Callable[[str], None]) -> None:
    """scripts/build-images --local-base NAME, its progress lines shown: only what changed is rebuilt."""
    script = paths.CHECKOUT / "scripts" / "build-images"
    if not script.is_file():
        raise InputError(f"image simrec/{name} must be built first (no scripts/build-images here)")
    process = subprocess.Popen(
        [str(script), "--local-base", name],
        env=engine_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        tail = [*tail[-20:], line.rstrip()]
        if line.startswith("== "):
            echo(f"  {line.rstrip()}")
    if process.wait() != 0:
        raise InputError(f"building simrec/{name} failed:\n" + "\n".join(tail))


def newest_source(folders: list[Path]) -> tuple[float, Path | None]:
    """The newest file under `folders` (what an image is built from), to tell a stale image."""
    newest: tuple[float, Path | None] = (0.0, None)
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else [folder]:
            if path.is_file() and "__pycache__" not in path.parts and path.stat().st_mtime > newest[0]:
                newest = (path.stat().st_mtime, path)
    return newest


def user_options(uid: int) -> list[str]:
    """Run as the image's user `uid`; rootless, that user is the one running podman (keep-id)."""
    keep_id = [f"--userns=keep-id:uid={uid},gid={uid}"] if os.geteuid() != 0 else []
    return [*keep_id, f"--user={uid}:{uid}"]


def hand_over(folders: list[Path], uid: int) -> None:
    """As root: make `folders` and everything in them (or a file, such as a socket) the image user's, so
    the task can write there (files this machine's user wrote meanwhile included). Rootless podman needs
    none of it."""
    if os.geteuid() != 0:
        return
    for folder in folders:
        for path in [folder, *folder.rglob("*")] if folder.is_dir() else [folder]:
            if path.lstat().st_uid != uid:
                os.lchown(path, uid, uid)


def mount_roots(paths: list[Path]) -> list[Path]:
    """The fewest folders covering `paths` (a folder inside another is covered by it)."""
    roots: list[Path] = []
    for path in sorted({p.resolve() for p in paths}, key=lambda p: (len(p.parts), str(p))):
        if not any(path.is_relative_to(root) for root in roots):
            roots.append(path)
    return roots


def _quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("8Gi", "512Mi", "2G") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


@dataclass(frozen=True)
class ContainerMode:
    """How the runner starts a task in its image: the folders to share, read-write and read-only, and
    sockets (host path -> path in the container)."""

    writable: list[Path]
    read_only: list[Path]
    sockets: dict[Path, str] = field(default_factory=dict)

    def options(self, container: dict[str, Any], platform: dict[str, Any]) -> list[str]:
        """podman run options for a task: resources and mounts from the IR, the folders to share."""
        options = []
        resources = container.get("resources", {})
        if "resourceMemoryLimit" in resources:
            options.append(f"--memory={_quantity_bytes(resources['resourceMemoryLimit'])}")
        if "cpuLimit" in resources:  # podman refuses more CPUs than the machine has
            options.append(f"--cpus={min(float(resources['cpuLimit']), float(os.cpu_count() or 1))}")
        for mount in platform.get("emptyDirMounts", []):
            size = _quantity_bytes(mount["sizeLimit"]) if mount.get("sizeLimit") else None
            if mount["mountPath"] == "/dev/shm":
                options.append(f"--shm-size={size or '64m'}")
            else:
                options.append(f"--tmpfs={mount['mountPath']}" + (f":size={size}" if size else ""))
        for folder in mount_roots(self.writable):
            options.append(f"--volume={folder}:{folder}")
        covered = mount_roots(self.writable)
        for folder in mount_roots(self.read_only):
            if folder.exists() and not any(folder.is_relative_to(root) for root in covered):
                options.append(f"--volume={folder}:{folder}:ro")
        options += [f"--volume={host}:{inside}" for host, inside in self.sockets.items()]
        return options

    def command(
        self,
        image: LocalImage,
        name: str,
        argv: list[str],
        env: dict[str, str],
        container: dict[str, Any],
        platform: dict[str, Any],
    ) -> list[str]:
        """The `podman run` command line that runs `argv` (the IR's command and args) as a pod would;
        the shared folders are made (and, as root, handed to the image's user) first."""
        uid = int(image.user.split(":")[0])
        writable = mount_roots(self.writable)
        for folder in writable:
            folder.mkdir(parents=True, exist_ok=True)
        hand_over([*writable, *self.sockets], uid)
        run = ["podman", "run", "--rm", "--replace", f"--name={name}", "--pull=never", "--network=host"]
        run += ["--init"]  # a pod's processes get a reaper too (Spark and Horovod start children)
        run += user_options(uid)
        run += self.options(container, platform)
        run += [f"--env={key}={value}" for key, value in sorted(env.items())]
        # Kubernetes' `command` replaces the image's ENTRYPOINT; its `args` are the rest
        run += [f"--entrypoint={argv[0]}", image.tag, *argv[1:]]
        return run


@contextlib.contextmanager
def engine_socket() -> Iterator[Path]:
    """A Docker-compatible API socket (podman system service) for the duration of a run."""
    folder = Path(tempfile.mkdtemp(prefix="simrec-engine-"))
    socket = folder / "engine.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=engine_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                error = service.stderr.read().decode(errors="replace") if service.stderr else ""
                raise InputError(f"podman system service did not start: {error.strip()[-500:]}")
            time.sleep(0.1)
        yield socket
    finally:
        service.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
