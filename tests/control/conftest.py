import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from datagen import write_dataset


@pytest.fixture
def smoke_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Environment for a smoke-profile run on generated data, with every store under tmp_path."""
    source = write_dataset(tmp_path / "fmnist")
    overrides = {
        "SIMREC__INGEST__SOURCE": str(source),
        "SIMREC__STORAGE__LAKE_URI": str(tmp_path / "lake"),
        "SIMREC__STORAGE__RUNS_DIR": str(tmp_path / "runs"),
        "SIMREC__STORAGE__CHECKPOINT_ROOT": str(tmp_path / "checkpoints"),
        "SIMREC__STORAGE__MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SIMREC__STORAGE__MLFLOW_ARTIFACT_ROOT": str(tmp_path / "mlflow-artifacts"),
        "SIMREC__SERVE__STATE_DIR": str(tmp_path / "serve"),
        "SIMREC__SERVE__PORT": str(_free_port()),
    }
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    yield dict(os.environ)
    # deploy leaves its local server running (as it should for a user): stop it after the test
    record = tmp_path / "serve" / "server.json"
    if record.exists():
        server = json.loads(record.read_text())
        if "container" in server:  # simrec run --containers
            subprocess.run(["podman", "rm", "--force", server["container"]], capture_output=True, timeout=60)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server["pid"], signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
