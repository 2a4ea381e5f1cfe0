"""helm for tests: the binary scripts/setup-helm builds from tools/helm, and charts/ rendered with it.
Shared by tests/control/test_charts.py and tests/steps/test_mlflow_postgres.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
# A Kubernetes release that KServe and Argo CD support and kubernetes-validate ships strict schemas for;
# helm renders for the same version (--kube-version), so the charts' kubeVersion constraint is checked too.
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "simrec"


def helm_program() -> Path:
    """The pinned helm; skips the test when it is not built."""
    located = subprocess.run(
        [str(ROOT / "scripts" / "setup-helm"), "--path"], capture_output=True, text=True, check=True
    )
    program = Path(located.stdout.strip())
    if not program.is_file():
        pytest.skip(f"helm is not built ({program}); run scripts/setup-helm (scripts/setup does)")
    return program


def values_args(chart: str, values: str | Path | None) -> list[str]:
    """--values for a file beside the chart (by name) or anywhere (an absolute path)."""
    return ["--values", str(CHARTS / chart / values)] if values else []


def render(
    helm: Path, chart: str, values: str | Path | None = None, *sets: str, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """`helm template` of charts/<chart> into `namespace` (simrec): the rendered objects."""
    command = [str(helm), "template", chart, str(CHARTS / chart), "--namespace", namespace]
    command += ["--kube-version", KUBERNETES_VERSION, *values_args(chart, values)]
    for assignment in sets:
        command += ["--set", assignment]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [doc for doc in by_kind(docs, kind) if name is None or doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]
