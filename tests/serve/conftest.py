"""Fixtures for the serving tests (serve environment): small recommender packages and real server
processes on loopback ports."""

import json
import os
import shutil
from pathlib import Path

import pytest
from serve_helpers import start_server

# Like tests/conftest.py: set before anything imports MLflow or TensorFlow, here and in servers started.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TOKEN = "test-token-0123456789"
ADMIN_TOKEN = "test-admin-token-9876543210"


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> dict[str, Path]:
    """Version 1 and 2 (different models and items), and two broken copies of version 1: one whose smoke
    answers were recorded differently, one whose model file is corrupt. Built by the steps environment
    (tests/packages.py: this one has no TensorFlow)."""
    from packages import build_in_steps_env

    root = tmp_path_factory.mktemp("packages")
    v1, v2 = build_in_steps_env((root / "v1", 300, 0), (root / "v2", 200, 1))
    smoke = shutil.copytree(v1, root / "bad-smoke")
    manifest = json.loads((smoke / "recommender.json").read_text())
    expected = manifest["smoke_queries"][0]["expected"]["by_item"]
    expected[0], expected[1] = expected[1], expected[0]
    (smoke / "recommender.json").write_text(json.dumps(manifest))
    corrupt = shutil.copytree(v1, root / "bad-model")
    (corrupt / "embedding.onnx").write_bytes(b"not an onnx file")
    return {"v1": v1, "v2": v2, "bad-smoke": smoke, "bad-model": corrupt}


@pytest.fixture(scope="session")
def server(packages, tmp_path_factory):
    """A server for read-only tests (nothing here deploys or adds items): admin routes on, but with an
    empty package root, so no request can deploy anything."""
    folder = tmp_path_factory.mktemp("server")
    (folder / "no-packages").mkdir()
    running = start_server(
        folder,
        TOKEN,
        "--package",
        str(packages["v1"]),
        "--package-root",
        str(folder / "no-packages"),
        admin_token=ADMIN_TOKEN,
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def plain_server(packages, tmp_path_factory):
    """As KServe runs it: no admin routes; one model thread and at most two queries in flight, so that a
    burst overflows it."""
    folder = tmp_path_factory.mktemp("plain-server")
    args = ("--package", str(packages["v1"]), "--model-threads", "1", "--max-in-flight", "2")
    running = start_server(folder, TOKEN, *args)
    yield running
    running.stop()


@pytest.fixture
def admin_server(packages, tmp_path):
    """A fresh server per test for deploy, rollback and catalogue additions; it deploys from the folder
    that holds the test packages."""
    running = start_server(
        tmp_path,
        TOKEN,
        "--package",
        str(packages["v1"]),
        "--version",
        "1",
        "--package-root",
        str(packages["v1"].parent),
        admin_token=ADMIN_TOKEN,
    )
    yield running
    running.stop()
