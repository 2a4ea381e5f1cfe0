"""What registering a validated model writes to the MLflow registry (steps image: full MLflow): the
promotion decision, the version's `simrec.*` tags, the folder logged byte for byte as a LoggedModel of a
`register` run and registered, the round-trip check, and the aliases. The register step orders these."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from simrec.infra.errors import InputError
from simrec.records import Evaluation, GateDecision, Validation
from simrec.registry.models import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    download_model,
    model_uri,
    resolve,
    stored_digest,
)
from simrec.registry.tracking import client, lineage_tags, start_run

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

TAG_VALUE_LIMIT = 5000  # MLflow's limit for a model version tag value


def promotion(gate: GateDecision, current_champion: str | None) -> tuple[bool, str]:
    """(promote to champion?, the decision in words). A blessing given against a champion that has since
    changed (another run registered meanwhile) is not acted on: it compared against the wrong model."""
    evaluated_against = str(gate.champion.version) if gate.champion else None
    if gate.mode == "disabled":
        return True, "promoted: no gate (mode disabled)"
    if not gate.blessed:
        verdict = f"not blessed: {'; '.join(gate.reasons) or 'no reason given'}"
        return False, (
            "dry-run: would not promote, " if gate.mode == "dry-run" else "not promoted, "
        ) + verdict
    if evaluated_against != current_champion:
        return False, (
            f"not promoted: evaluated against champion {evaluated_against or 'none'}, "
            f"but the champion is now {current_champion or 'none'}; re-evaluate"
        )
    if gate.mode == "dry-run":
        return False, "dry-run: would promote (blessed)"
    return True, "promoted: blessed by the gate"


def version_tags(
    evaluation: Evaluation, validation: Validation, git_sha: str, pipeline_run_id: str
) -> dict[str, str]:
    """Everything that explains the version, as `simrec.*` tags (read back by `simrec lineage`)."""
    lineage = evaluation.lineage
    tags = lineage_tags(lineage, git_sha)
    for name, table in lineage.tables.items():
        if table.rows is not None:
            tags[f"simrec.delta.{name}.rows"] = str(table.rows)
    for file_name, source in lineage.sources.items():
        if "sha256" in source:
            tags[f"simrec.source.{file_name}.sha256"] = str(source["sha256"])
    tags |= {f"simrec.train.{name}": json.dumps(value) for name, value in evaluation.training.params.items()}
    tags |= {f"simrec.metric.{name}": repr(value) for name, value in evaluation.metrics.items()}
    gate = evaluation.gate
    tags |= {
        "simrec.pipeline_run_id": pipeline_run_id,
        "simrec.model_id": evaluation.model_id,
        "simrec.training_run_id": str(evaluation.training.mlflow_run_id),
        "simrec.gate.mode": gate.mode,
        "simrec.gate.blessed": str(gate.blessed).lower(),
        "simrec.gate.reasons": "; ".join(gate.reasons),
        "simrec.gate.champion": str(gate.champion.version) if gate.champion else "",
        DIGEST_TAG: validation.digest,
    }
    if evaluation.embeddings:
        embeddings = evaluation.embeddings.model_dump(mode="json")
        tags |= {f"simrec.embeddings.{k}": str(v) for k, v in embeddings.items()}
    # the collection the version's package searches when served through the engine, and its alias
    tags |= {f"simrec.vector_engine.{k}": v for k, v in evaluation.vector_engine.items()}
    return {key: value[:TAG_VALUE_LIMIT] for key, value in tags.items()}


def version_with_digest(model_name: str, digest: str) -> ModelVersion | None:
    """The version registered from the validated folder with this digest, if there is one."""
    for version in client().search_model_versions(f"name = '{model_name}'"):
        if version.tags.get(DIGEST_TAG) == digest:
            return client().get_model_version(model_name, str(version.version))
    return None


@dataclass(frozen=True)
class Logged:
    version: str  # the new version's number
    logged_model_id: str
    run_id: str  # the register run


def log_version(
    model: Path,
    evaluation: Evaluation,
    validation: Validation,
    training_run: Run,
    tags: dict[str, str],
    *,
    model_name: str,
    experiment: str,
) -> Logged:
    """Logs the folder's files as they are as a LoggedModel of a `register` run (under the training run
    when both share an experiment) and registers it with `tags`; no alias moves."""
    import mlflow

    training_run_id = training_run.info.run_id
    run_tags = {"simrec.step": "register", "simrec.training_run_id": training_run_id}
    with start_run(experiment, run_name="register", tags=run_tags) as run:
        if run.info.experiment_id == training_run.info.experiment_id:
            # A finished run cannot be a live parent (start_run(parent_run_id=…) needs an active one);
            # the tag is what nesting is, and the UI shows register as the training run's child.
            mlflow.set_tag("mlflow.parentRunId", training_run_id)
        # the training parameters are the training run's own; the rest is searchable on this run too
        mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith("simrec.train.")})
        mlflow.log_dict(evaluation.model_dump(mode="json"), "evaluation.json")
        mlflow.log_dict(validation.model_dump(mode="json"), "validation.json")
        logged = mlflow.initialize_logged_model(
            name=model_name,
            source_run_id=run.info.run_id,
            tags={"simrec.model_id": evaluation.model_id, DIGEST_TAG: validation.digest},
            model_type="simrec-recommender",
        )
        # The folder's files as they are: log_model would save (and so change) it again.
        client().log_model_artifacts(logged.model_id, str(model))
        mlflow.finalize_logged_model(logged.model_id, "READY")
        mlflow.log_metrics(evaluation.metrics, model_id=logged.model_id)
        version = mlflow.register_model(f"models:/{logged.model_id}", model_name, tags=tags)
    return Logged(str(version.version), logged.model_id, run.info.run_id)


def check_round_trip(version: ModelVersion, digest: str) -> None:
    """The registry hands back exactly the validated folder, and MLflow loads it from the registry."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="simrec-register-") as scratch:
        downloaded = download_model(version, Path(scratch))
        if stored_digest(downloaded) != digest:  # download_model checks too; this keeps the step honest
            raise InputError(f"{model_uri(version)}: the registry returned a different folder")
    mlflow.pyfunc.load_model(model_uri(version))


def settle(
    model_name: str, number: str, *, decision: str, previous_champion: str | None, promote: bool, about: str
) -> None:
    """Records the decision on the version, moves the aliases (challenger; champion when promoted), sets
    the description `about`, then checks that the aliases resolve to the version."""
    registry = client()
    registry.set_model_version_tag(model_name, number, "simrec.promotion", decision)
    registry.set_model_version_tag(model_name, number, "simrec.previous_champion", previous_champion or "")
    moved = (CHALLENGER, CHAMPION) if promote else (CHALLENGER,)
    for alias in moved:
        registry.set_registered_model_alias(model_name, alias, number)
    registry.update_model_version(model_name, number, description=about)
    for alias in moved:
        if str(resolve(f"{model_name}@{alias}").version) != number:
            raise InputError(f"models:/{model_name}@{alias} does not resolve to version {number}")


def description(evaluation: Evaluation, git_sha: str, pipeline_run_id: str, decision: str) -> str:
    recall = evaluation.metrics.get("recall_at_1")
    return (
        f"Recommender {evaluation.model_id[:12]} (embedding.keras sha256) from pipeline run "
        f"{pipeline_run_id}, git {git_sha}, training run {evaluation.training.mlflow_run_id}; "
        + (f"test recall@1 {recall:.4f}; " if recall is not None else "")
        + f"gate {evaluation.gate.mode}: {decision}."
    )
