"""The cluster's registry path on real services: Debian's PostgreSQL, and `mlflow server` started with the
very command, arguments and environment charts/simrec renders (helm renders them here; only the listen
address, the port and the auth file's path are changed for this machine, and a local folder stands for the
object store). simrec's register step registers two versions through it, the champion alias moves, and
`simrec lineage` reads the chain back."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import requests
from helm_charts import helm_program, one, render
from registry_helpers import evaluation, training_run, write_json

from simrec.cli import main as simrec
from simrec.infra import paths
from simrec.registry import models as registry
from simrec.registry.lineage import describe
from simrec.registry.tracking import PIPELINE_RUN_ENV

USER, PASSWORD = "simrec-pipeline", "pipeline-secret"  # the pipeline's account (Secret simrec-mlflow)
# An '@' in the password is percent-encoded in the URI (%40), and percent signs are what the chart's start
# script must escape in MLflow's auth config file (configparser would read them as interpolation).
DB_USER, DB_PASSWORD, DB_NAME = "mlflow", "db@secret", "mlflow"
CLUSTER_HOST = "mlflow:5000"  # conf/full's tracking URI host, as the pipeline's pods send it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(check, what: str, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not come up in {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on a free loopback port (as the `postgres` user when run as root,
    which initdb refuses); yields the database URI the chart's Secret would hold."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not bins:
        pytest.skip("PostgreSQL is not installed (scripts/setup installs Debian's postgresql)")
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="simrec-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = root / "data", root / "log.txt", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)

    run("sh", "-c", f"printf %s '{DB_PASSWORD}' > {root}/pw")
    run(f"{bindir}/initdb", "-D", str(data), "-U", DB_USER, f"--pwfile={root}/pw", "-A", "scram-sha-256",
        "-E", "UTF8", "--no-sync")  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(f"{bindir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        import psycopg2

        login = {"host": "127.0.0.1", "port": port, "user": DB_USER, "password": DB_PASSWORD}
        connection = psycopg2.connect(**login, dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {DB_NAME}")
        connection.close()
        yield f"postgresql+psycopg2://{DB_USER}:{quote(DB_PASSWORD, safe='')}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    url: str
    artifacts: Path
    args: list[str]


def _env_of(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as Kubernetes would set it, Secrets resolved from the rendered ones."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts, port = root / "object-store", _free_port()
    docs = render(
        helm_program(),
        "simrec",
        None,
        f"mlflow.backendStore.uri={postgres}",
        f"mlflow.artifactsDestination={artifacts}",
        f"mlflow.port={port}",
        "mlflow.workers=1",
        f"mlflow.trackingUsername={USER}",
        f"mlflow.trackingPassword={PASSWORD}",
        "objectStore.accessKeyId=unused",
        "objectStore.secretAccessKey=unused",
    )
    secrets = {
        doc["metadata"]["name"]: doc.get("stringData")
        or {key: base64.b64decode(value).decode() for key, value in doc["data"].items()}
        for doc in docs
        if doc["kind"] == "Secret"
    }
    (container,) = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    env = _env_of(container, secrets)
    # this machine instead of a pod: the emptyDir for the auth file, loopback only, the steps image's mlflow
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(root / "basic_auth.ini")
    env["PATH"] = f"{paths.envs_dir() / 'steps' / 'bin'}:{os.environ['PATH']}"
    args = [arg.replace("--host=0.0.0.0", "--host=127.0.0.1") for arg in container["args"]]
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            container["command"] + args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        try:
            return requests.get(f"{url}/health", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or busy migrating the database
            return False

    try:
        _wait(healthy, "mlflow server", log)
        yield Server(url, artifacts, args)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:  # uvicorn waits for idle keep-alive connections
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def client_env(server, monkeypatch) -> None:
    """The pipeline's pods' view: the tracking URI and the account from Secret simrec-mlflow."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.delenv("SIMREC_MLFLOW_ARTIFACT_ROOT", raising=False)  # the server decides: proxied
    mlflow.set_tracking_uri(server.url)


def test_the_chart_server_guards_its_door(server) -> None:
    # generous timeouts: every authenticated request checks a salted password hash, slow on a busy machine
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    # the kubelet's probes carry no login and the pod's IP as Host
    probe = requests.get(f"{server.url}/health", headers={"Host": "10.1.2.3:5000"}, timeout=60)
    assert probe.status_code == 200
    assert requests.get(search, timeout=60).status_code == 401
    assert requests.get(search, auth=(USER, PASSWORD), timeout=60).status_code == 200
    # the Service name the pipeline uses is an allowed Host; anything else is refused (DNS rebinding)
    as_cluster = requests.get(search, auth=(USER, PASSWORD), headers={"Host": CLUSTER_HOST}, timeout=60)
    assert as_cluster.status_code == 200
    elsewhere = requests.get(search, auth=(USER, PASSWORD), headers={"Host": "evil.example:5000"}, timeout=60)
    assert elsewhere.status_code == 403


def test_register_moves_the_champion_and_lineage_reads_back(server, postgres, client_env, models, tmp_path):
    import mlflow
    import psycopg2

    run_id = training_run()
    versions = []
    for (model, validation, model_id), champion in zip(models[:2], (None, "1"), strict=True):
        gate = evaluation(model_id, run_id, champion=champion)
        record = write_json(tmp_path / f"evaluation-{model_id}.json", gate)
        out = tmp_path / f"register-{model_id}"
        with pytest.MonkeyPatch.context() as env:
            env.setenv(PIPELINE_RUN_ENV, f"run-{len(versions)}")  # a pod's Workflow label
            simrec(
                ["register", "--model", str(model), "--evaluation", str(record), "--validation",
                 str(validation), "--git-sha", f"sha{len(versions)}",
                 "--registered-out", str(out / "registered"), "--version-out", str(out / "version")]
            )  # fmt: skip
        versions.append(json.loads((out / "registered").read_text()))

    assert [(v["version"], v["promoted"]) for v in versions] == [(1, True), (2, True)]
    assert str(registry.champion("simrec").version) == "2"
    assert registry.aliases(registry.resolve("simrec/1")) == []  # champion and challenger both moved on
    lineage = describe("simrec@champion")
    assert (lineage["version"], lineage["git_sha"], lineage["pipeline_run_id"]) == ("2", "sha1", "run-1")
    assert lineage["aliases"] == ["challenger", "champion"]
    assert lineage["tables"]["train"] == {"uri": "/lake/train", "version": "4", "rows": "600"}
    assert lineage["training"]["run_id"] == run_id and lineage["training"]["params"]["epochs"] == "2"
    assert lineage["gate"]["champion"] == "1"
    # artifacts went through the server into the object store's stand-in, not to the client's disk
    assert mlflow.get_experiment_by_name("simrec").artifact_location.startswith("mlflow-artifacts:")
    assert len(list(server.artifacts.rglob("MLmodel"))) == 2
    # and the registry and the auth app's users are rows in PostgreSQL
    port = urlparse(postgres).port
    login = {"host": "127.0.0.1", "port": port, "user": DB_USER, "password": DB_PASSWORD, "dbname": DB_NAME}
    with psycopg2.connect(**login) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT version FROM model_versions WHERE name = 'simrec' ORDER BY version")
        assert [row[0] for row in cursor.fetchall()] == [1, 2]
        cursor.execute("SELECT is_admin FROM users WHERE username = %s", (USER,))
        assert cursor.fetchall() == [(True,)]
