"""The one place simrec talks to MLflow: experiment selection and run tagging conventions."""

from __future__ import annotations

import os
from typing import Any

import mlflow

DEFAULT_EXPERIMENT = "simrec"


def start_run(experiment: str, run_id: str | None = None, **kwargs: Any) -> mlflow.ActiveRun:
    """Starts (or, with run_id, resumes) a run in the experiment, in the store MLFLOW_TRACKING_URI names."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_id=run_id, **kwargs)


def lineage_tags(lineage: dict[str, Any], git_sha: str) -> dict[str, str]:
    """Tags that tie a run to its code and its exact data."""
    tags = {"simrec.git_sha": git_sha}
    for name, table in lineage["tables"].items():
        tags[f"simrec.delta.{name}.uri"] = str(table["uri"])
        tags[f"simrec.delta.{name}.version"] = str(table["version"])
    return tags
