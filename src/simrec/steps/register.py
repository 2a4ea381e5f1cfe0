"""Register step: the validated pyfunc folder, byte for byte, as a new version of the registered model.

The folder is logged as an MLflow LoggedModel of a `register` run (which points at the training run),
then registered; the version's tags carry its lineage (Delta tables, source checksums, git SHA, pipeline
run, training parameters), its metrics and the gate's decision. Alias `challenger` always moves to the
new version; `champion` moves only when the gate blessed it (mode enabled) or there is no gate (mode
disabled); a dry-run gate records what it would have done. The previous champion keeps its version, so
rolling back is moving one alias."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from simrec.errors import InputError, validation_problems
from simrec.files import folder_sha256, write_json_atomic
from simrec.mlflow_tracking import DEFAULT_EXPERIMENT, PIPELINE_RUN_ENV, client, lineage_tags, start_run
from simrec.progress import report
from simrec.recommender import MANIFEST_FILE
from simrec.records import GateMode
from simrec.registry import (
    CHALLENGER,
    CHAMPION,
    DIGEST_TAG,
    aliases,
    champion,
    download_model,
    model_uri,
    package_folder,
    resolve,
    stored_digest,
)

log = logging.getLogger(__name__)
TAG_VALUE_LIMIT = 5000  # MLflow's limit for a model version tag value


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Table(_Record):
    uri: str
    version: int
    rows: int | None = None


class Lineage(_Record):
    tables: dict[str, Table]
    sources: dict[str, dict[str, Any]] = {}


class GateChampion(_Record):
    version: int | str
    recall_at_1: float | None = None


class Gate(_Record):
    mode: GateMode
    blessed: bool
    reasons: list[str] = []
    champion: GateChampion | None = None


class Training(_Record):
    mlflow_run_id: str
    params: dict[str, Any] = {}


class Evaluation(_Record):
    """Evaluate's output, as far as register relies on it."""

    model_id: str
    metrics: dict[str, float]
    gate: Gate
    lineage: Lineage
    training: Training
    embeddings: dict[str, Any] | None = None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not {what} ({exc.__class__.__name__}: {exc})") from exc


def read_evaluation(path: Path) -> Evaluation:
    try:
        return Evaluation.model_validate(_read_json(path, "an evaluation record"))
    except ValidationError as exc:
        raise InputError(f"{path}: not an evaluation record: {validation_problems(exc.errors())}") from exc


def read_validation(path: Path) -> dict[str, Any]:
    validation = _read_json(path, "a validation record")
    if not isinstance(validation, dict) or validation.get("ok") is not True or "digest" not in validation:
        raise InputError(f"{path}: not a passed validation record (needs ok: true and digest)")
    return validation


def promotion(gate: Gate, current_champion: str | None) -> tuple[bool, str]:
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
    evaluation: Evaluation, validation: dict[str, Any], git_sha: str, pipeline_run_id: str
) -> dict[str, str]:
    """Everything that explains the version, as `simrec.*` tags (read back by `simrec lineage`)."""
    lineage = evaluation.lineage
    tags = lineage_tags(lineage.model_dump(), git_sha)
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
        "simrec.training_run_id": evaluation.training.mlflow_run_id,
        "simrec.gate.mode": gate.mode,
        "simrec.gate.blessed": str(gate.blessed).lower(),
        "simrec.gate.reasons": "; ".join(gate.reasons),
        "simrec.gate.champion": str(gate.champion.version) if gate.champion else "",
        DIGEST_TAG: validation["digest"],
    }
    if evaluation.embeddings:
        tags |= {f"simrec.embeddings.{k}": str(v) for k, v in evaluation.embeddings.items()}
    return {key: value[:TAG_VALUE_LIMIT] for key, value in tags.items()}


def _check_model_folder(model: Path, evaluation: Evaluation, validation: dict[str, Any]) -> None:
    if folder_sha256(model) != validation["digest"]:
        raise InputError(f"{model}: not the folder that was validated (content digest differs)")
    manifest = json.loads((package_folder(model) / MANIFEST_FILE).read_text())
    if manifest.get("model_id") != evaluation.model_id:
        raise InputError(
            f"{model}: holds model {manifest.get('model_id')}, but the evaluation is of {evaluation.model_id}"
        )


def register(
    model: Path,
    evaluation: Evaluation,
    validation: dict[str, Any],
    *,
    model_name: str = "simrec",
    git_sha: str = "unknown",
    pipeline_run_id: str = "unknown",
    experiment: str = DEFAULT_EXPERIMENT,
) -> dict[str, Any]:
    """Registers the validated folder as a new version, sets aliases; returns the registration record."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _check_model_folder(model, evaluation, validation)
    registry = client()
    training_run_id = evaluation.training.mlflow_run_id
    try:
        training_run = registry.get_run(training_run_id)
    except MlflowException as exc:
        raise InputError(
            f"training run {training_run_id} (from the evaluation) is not in this store"
        ) from exc
    previous = champion(model_name)
    previous_version = str(previous.version) if previous else None  # MLflow gives int or str
    if (existing := _version_with_digest(model_name, validation["digest"])) is not None:
        # A re-run with unchanged inputs (KFP cannot cache this step: its pipeline run id differs every
        # run) registers nothing new and moves no alias.
        number = str(existing.version)
        log.info("%s version %s is this validated folder already; nothing registered", model_name, number)
        return {
            "name": model_name,
            "version": int(number),
            "aliases": aliases(existing),
            "model_uri": model_uri(existing),
            "champion_uri": f"models:/{model_name}@{CHAMPION}",
            "model_id": evaluation.model_id,
            "mlflow_run_id": existing.run_id,
            "promoted": False,
            "decision": f"already registered as version {number}: nothing changed",
            "previous_champion": previous_version,
        }
    promote, decision = promotion(evaluation.gate, previous_version)
    tags = version_tags(evaluation, validation, git_sha, pipeline_run_id)
    run_tags = {"simrec.step": "register", "simrec.training_run_id": training_run_id}
    with start_run(experiment, run_name="register", tags=run_tags) as run:
        if run.info.experiment_id == training_run.info.experiment_id:
            # A finished run cannot be a live parent (start_run(parent_run_id=…) needs an active one);
            # the tag is what nesting is, and the UI shows register as the training run's child.
            mlflow.set_tag("mlflow.parentRunId", training_run_id)
        # the training parameters are the training run's own; the rest is searchable on this run too
        mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith("simrec.train.")})
        mlflow.log_dict(evaluation.model_dump(), "evaluation.json")
        mlflow.log_dict(validation, "validation.json")
        logged = mlflow.initialize_logged_model(
            name=model_name,
            source_run_id=run.info.run_id,
            tags={"simrec.model_id": evaluation.model_id, DIGEST_TAG: validation["digest"]},
            model_type="simrec-recommender",
        )
        # The folder's files as they are: log_model would save (and so change) it again.
        registry.log_model_artifacts(logged.model_id, str(model))
        mlflow.finalize_logged_model(logged.model_id, "READY")
        mlflow.log_metrics(evaluation.metrics, model_id=logged.model_id)
        version = mlflow.register_model(f"models:/{logged.model_id}", model_name, tags=tags)
    number = str(version.version)
    # Before any alias moves: a version that does not come back intact, or does not load, stays unaliased.
    _check_round_trip(registry.get_model_version(model_name, number), validation["digest"])
    registry.set_model_version_tag(model_name, number, "simrec.promotion", decision)
    registry.set_model_version_tag(model_name, number, "simrec.previous_champion", previous_version or "")
    registry.set_registered_model_alias(model_name, CHALLENGER, number)
    if promote:
        registry.set_registered_model_alias(model_name, CHAMPION, number)
    recall = evaluation.metrics.get("recall_at_1")
    registry.update_model_version(
        model_name,
        number,
        description=(
            f"Recommender {evaluation.model_id[:12]} (embedding.keras sha256) from pipeline run "
            f"{pipeline_run_id}, git {git_sha}, training run {training_run_id}; "
            + (f"test recall@1 {recall:.4f}; " if recall is not None else "")
            + f"gate {evaluation.gate.mode}: {decision}."
        ),
    )
    registered = registry.get_model_version(model_name, number)
    for alias in (CHALLENGER, CHAMPION) if promote else (CHALLENGER,):
        if str(resolve(f"{model_name}@{alias}").version) != number:
            raise InputError(f"models:/{model_name}@{alias} does not resolve to version {number}")
    record = {
        "name": model_name,
        "version": int(number),
        "aliases": aliases(registered),
        "model_uri": model_uri(registered),
        "champion_uri": f"models:/{model_name}@{CHAMPION}",
        "model_id": evaluation.model_id,
        "logged_model_id": logged.model_id,
        "mlflow_run_id": run.info.run_id,
        "pipeline_run_id": pipeline_run_id,
        "promoted": promote,
        "decision": decision,
        "previous_champion": previous_version,
    }
    log.info("registered %s version %s (%s)", model_name, number, decision)
    return record


def _version_with_digest(model_name: str, digest: str):  # -> ModelVersion | None
    for version in client().search_model_versions(f"name = '{model_name}'"):
        if version.tags.get(DIGEST_TAG) == digest:
            return client().get_model_version(model_name, str(version.version))
    return None


def _check_round_trip(version, digest: str) -> None:
    """The registry hands back exactly the validated folder, and MLflow loads it from the registry."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="simrec-register-") as scratch:
        downloaded = download_model(version, Path(scratch))
        if stored_digest(downloaded) != digest:  # download_model checks too; this keeps the step honest
            raise InputError(f"{model_uri(version)}: the registry returned a different folder")
    mlflow.pyfunc.load_model(model_uri(version))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec register", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the validated pyfunc folder")
    parser.add_argument("--evaluation", type=Path, required=True, help="evaluate's record JSON")
    parser.add_argument("--validation", type=Path, required=True, help="validate's record JSON")
    parser.add_argument("--model-name", default="simrec", help="registered model name")
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--registered-out", type=Path, required=True, help="registration record JSON")
    parser.add_argument("--version-out", type=Path, required=True, help="file for the new version number")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    record = register(
        args.model,
        read_evaluation(args.evaluation),
        read_validation(args.validation),
        model_name=args.model_name,
        git_sha=args.git_sha,
        # the run's identity comes from the pod (the downward API), as no KFP placeholder gives it on 2.4.1
        pipeline_run_id=os.environ.get(PIPELINE_RUN_ENV, "unknown"),
        experiment=args.experiment,
    )
    write_json_atomic(args.registered_out, record)
    args.version_out.parent.mkdir(parents=True, exist_ok=True)
    args.version_out.write_text(str(record["version"]))
    report(
        f"registered {record['model_uri']} (aliases: {', '.join(record['aliases'])}); {record['decision']}"
    )
