"""The one place simrec talks to MLflow: experiment selection, the client, and tagging conventions.

MLflow is imported inside the functions: the control environment (no MLflow) shares the constants."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from simrec.records import Lineage

if TYPE_CHECKING:
    import mlflow
    from mlflow import MlflowClient

DEFAULT_EXPERIMENT = "simrec"


ARTIFACT_ROOT_ENV = "SIMREC_MLFLOW_ARTIFACT_ROOT"
# The pipeline run a task belongs to, recorded on registered versions: on a cluster the Argo Workflow's name
# (the pod's label, through the downward API; KFP keeps the run id as that Workflow's label pipeline/runid),
# in embedded runs the run name.
PIPELINE_RUN_ENV = "SIMREC_PIPELINE_RUN"


def client() -> MlflowClient:
    """A client of the store MLFLOW_TRACKING_URI names; its model registry is the same store."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return mlflow.MlflowClient()


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def start_run(experiment: str, run_id: str | None = None, **kwargs: Any) -> mlflow.ActiveRun:
    """Starts (or, with run_id, resumes) a run in the experiment, in the store MLFLOW_TRACKING_URI names.

    A new experiment keeps its artifacts under SIMREC_MLFLOW_ARTIFACT_ROOT when that is set; otherwise
    the tracking server decides (a local store would use ./mlruns of whatever directory a step ran in)."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if root and mlflow.get_experiment_by_name(experiment) is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=root)
        except mlflow.exceptions.MlflowException:
            if mlflow.get_experiment_by_name(experiment) is None:  # not a concurrent creation
                raise
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_id=run_id, **kwargs)


def lineage_tags(lineage: Lineage, git_sha: str) -> dict[str, str]:
    """Tags that tie a run to its code and its exact data."""
    tags = {"simrec.git_sha": git_sha}
    for name, table in lineage.tables.items():
        tags[f"simrec.delta.{name}.uri"] = table.uri
        tags[f"simrec.delta.{name}.version"] = str(table.version)
    return tags
