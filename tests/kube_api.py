"""A real Kubernetes API server for tests: etcd and kube-apiserver (built by scripts/setup-kube from
tools/kube) on free loopback ports in a temporary folder, with KServe's and Argo CD's own CRDs (tests/crds/)
installed. Nothing else runs: no controllers, no scheduler, no kubelet, so objects are checked and stored
as a cluster would (schemas, server-side apply, field validation, resourceVersion, RBAC) but nothing acts on
them. Shared by every environment's tests through the `kube` fixture in tests/conftest.py; reached with
plain HTTP (requests), which every environment's lock has."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRDS = Path(__file__).parent / "crds"
START_TIMEOUT_S = 90.0
FIELD_MANAGER = "simrec-tests"


def binaries() -> Path:
    """The folder with etcd and kube-apiserver; skips only when there is no Go to build them with."""
    located = subprocess.run(
        [str(ROOT / "scripts" / "setup-kube"), "--path"], capture_output=True, text=True, check=True
    )
    folder = Path(located.stdout.strip())
    if (folder / "kube-apiserver").is_file() and (folder / "etcd").is_file():
        return folder
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").is_file()):
        pytest.skip(f"no Go toolchain to build kube-apiserver and etcd ({folder} is empty)")
    pytest.fail(
        f"kube-apiserver and etcd are not built in {folder}: run scripts/setup-kube (scripts/setup does)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {message}")
        self.status, self.body = status, body


@dataclass
class KubeAPI:
    """A running etcd + kube-apiserver. `admin_token` is in group system:masters."""

    url: str
    ca_file: Path
    admin_token: str
    folder: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    _resources: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)

    # -- starting and stopping ------------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(cls, folder: Path) -> Iterator[KubeAPI]:
        api = cls.start(folder)
        try:
            yield api
        finally:
            api.stop()

    @classmethod
    def start(cls, folder: Path) -> KubeAPI:
        programs = binaries()
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        # static tokens: the admin (system:masters passes every RBAC check) and nobody else
        (folder / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        (folder / "sa.key").write_bytes(_rsa_key())
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        log = (folder / "etcd.log").open("wb")
        etcd = subprocess.Popen(
            [
                str(programs / "etcd"),
                "--data-dir",
                str(folder / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",  # a test database: nothing to keep across a power cut
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = cls(
            url=f"https://127.0.0.1:{api_port}",
            ca_file=folder / "certs" / "apiserver.crt",
            admin_token=token,
            folder=folder,
            processes=[etcd],
        )
        try:
            log = (folder / "kube-apiserver.log").open("wb")
            api.processes.append(
                subprocess.Popen(
                    [
                        str(programs / "kube-apiserver"),
                        f"--etcd-servers={etcd_url}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={api_port}",
                        f"--cert-dir={folder / 'certs'}",  # a self-signed serving certificate, made there
                        f"--token-auth-file={folder / 'tokens.csv'}",
                        f"--service-account-key-file={folder / 'sa.key'}",
                        f"--service-account-signing-key-file={folder / 'sa.key'}",
                        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                        "--authorization-mode=RBAC",
                        # no Endpoints to keep for a loopback address (else it exits: "cannot use public
                        # IP 127.0.0.1 with endpoint reconciler")
                        "--endpoint-reconciler-type=none",
                        "--service-cluster-ip-range=10.96.0.0/16",  # what Services get, never routed
                        "--v=0",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            # read while the server starts (1.3 MB of YAML; libyaml's parser when there is one)
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            crds = [yaml.load(crd.read_text(), Loader=loader) for crd in sorted(CRDS.glob("*.yaml"))]
            api._wait_ready()
            api.install_crds(crds)
        except BaseException:
            api.stop()
            raise
        return api

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited ({process.returncode}): {self._logs()}")
            with contextlib.suppress(requests.RequestException, OSError):
                if self.ca_file.is_file():
                    answer = self.session().get(f"{self.url}/readyz", timeout=5)
                    if answer.status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready within {START_TIMEOUT_S:g} s: {self._logs()}")
            time.sleep(0.2)

    def _logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.folder / name).read_text(errors='replace')[-3000:]}"
            for name in ("etcd.log", "kube-apiserver.log")
            if (self.folder / name).is_file()
        )

    def stop(self) -> None:
        for process in reversed(self.processes):  # the API server before its database
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    # -- HTTP ---------------------------------------------------------------------------------------------

    def session(self, token: str | None = None) -> requests.Session:
        session = requests.Session()
        # only this server's certificate, and no proxy or CA bundle from the environment (which would
        # override `verify`)
        session.trust_env = False
        session.verify = str(self.ca_file)
        session.headers["Authorization"] = f"Bearer {token or self.admin_token}"
        return session

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Any:
        data = body if body is None or isinstance(body, (str, bytes)) else json.dumps(body)
        answer = self.session(token).request(
            method,
            self.url + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type},
            timeout=60,
        )
        try:
            payload = answer.json()
        except ValueError:
            payload = answer.text
        if answer.status_code >= 400:
            raise ApiError(method, path, answer.status_code, payload)
        return payload

    def get(self, path: str, **options: Any) -> Any:
        return self.request("GET", path, **options)

    # -- objects ------------------------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(the path of the resource's collection without a namespace, whether it is namespaced), from
        the server's discovery documents."""
        key = (api_version, kind)
        if key not in self._resources:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            for entry in self.get(base)["resources"]:
                if "/" not in entry["name"]:
                    self._resources[(api_version, entry["kind"])] = (
                        f"{base}/{entry['name']}",
                        entry["namespaced"],
                    )
        if key not in self._resources:
            raise KeyError(f"the API server serves no {kind} in {api_version}")
        return self._resources[key]

    def path(self, obj: dict[str, Any], namespace: str | None = None, *, named: bool = True) -> str:
        collection, namespaced = self.resource(obj["apiVersion"], obj["kind"])
        if namespaced:
            namespace = namespace or obj["metadata"].get("namespace") or "default"
            base, _, plural = collection.rpartition("/")
            collection = f"{base}/namespaces/{namespace}/{plural}"
        return f"{collection}/{obj['metadata']['name']}" if named else collection

    def apply(
        self,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        token: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply, as `kubectl apply --server-side` does; unknown or duplicate fields refused
        (fieldValidation=Strict), not dropped."""
        params = {"fieldManager": FIELD_MANAGER, "fieldValidation": "Strict", "force": "true"}
        if dry_run:
            params["dryRun"] = "All"
        return self.request(
            "PATCH",
            self.path(obj, namespace),
            json.dumps(obj),  # JSON is YAML, and far quicker to write
            token=token,
            content_type="application/apply-patch+yaml",
            params=params,
        )

    def create_namespace(self, name: str) -> None:
        self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def install_crds(self, crds: list[dict[str, Any]]) -> None:
        """Applies CustomResourceDefinitions, then waits until each is Established (served)."""
        for crd in crds:
            self.apply(crd)
        deadline = time.monotonic() + 60
        for crd in crds:
            path = self.path(crd)
            while True:
                status = self.get(path).get("status") or {}
                conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
                if conditions.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {crd['metadata']['name']} not Established: {conditions}")
                time.sleep(0.1)
        self._resources.clear()  # discovery now has their groups

    def service_account_token(self, namespace: str, name: str) -> str:
        """A ServiceAccount (made if missing) and a token for it from the TokenRequest API, as a pod's
        projected token: requests with it are authorized by RBAC as system:serviceaccount:NS:NAME."""
        with contextlib.suppress(ApiError):
            self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        }
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        return answer["status"]["token"]

    def kubeconfig(self, token: str | None = None, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig for the `kubernetes` client, kubectl or helm."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": "test", "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}
            ],
            "current-context": "test",
        }

    def memory_mb(self) -> dict[str, float]:
        """Resident memory of each process (for the notes in docs)."""
        sizes = {}
        for process in self.processes:
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
            sizes[Path(process.args[0]).name] = int(rss.split()[1]) / 1024
        return sizes


def _rsa_key() -> bytes:
    """The service accounts' signing key (PEM), made fresh for each server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def unique_namespace(prefix: str) -> str:
    """A namespace name no other test uses in the same server."""
    return f"{prefix}-{secrets.token_hex(3)}"


if __name__ == "__main__":  # python tests/kube_api.py: start one, print what it costs, stop it
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        with KubeAPI.running(Path(tmp)) as server:
            took = time.monotonic() - began
            print(f"ready with the CRDs in {took:.1f} s at {server.url}; memory MB {server.memory_mb()}")
