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
from pathlib import Path

from simrec.infra.errors import InputError
from simrec.infra.files import folder_sha256
from simrec.infra.progress import report
from simrec.recommender.package import MANIFEST_FILE
from simrec.records import Evaluation, Registration, Validation, read_record, write_record
from simrec.registry.models import CHAMPION, aliases, champion, model_uri, package_folder
from simrec.registry.registration import (
    check_round_trip,
    description,
    log_version,
    promotion,
    settle,
    version_tags,
    version_with_digest,
)
from simrec.registry.tracking import DEFAULT_EXPERIMENT, PIPELINE_RUN_ENV, client

log = logging.getLogger(__name__)


def read_evaluation(path: Path) -> Evaluation:
    return read_record(Evaluation, path, "an evaluation record")


def read_validation(path: Path) -> Validation:
    validation = read_record(Validation, path, "a passed validation record")
    if not validation.ok:
        raise InputError(f"{path}: not a passed validation record (needs ok: true and digest)")
    return validation


def _check_inputs(model: Path, evaluation: Evaluation, validation: Validation):  # -> mlflow Run
    """The model folder is the validated one and holds the evaluated model; returns the training run."""
    from mlflow.exceptions import MlflowException

    if folder_sha256(model) != validation.digest:
        raise InputError(f"{model}: not the folder that was validated (content digest differs)")
    manifest_model_id = json.loads((package_folder(model) / MANIFEST_FILE).read_text()).get("model_id")
    if manifest_model_id != evaluation.model_id:
        raise InputError(
            f"{model}: holds model {manifest_model_id}, but the evaluation is of {evaluation.model_id}"
        )
    training_run_id = evaluation.training.mlflow_run_id
    if not training_run_id:
        raise InputError("the evaluation names no training run (training.mlflow_run_id)")
    try:
        return client().get_run(training_run_id)
    except MlflowException as exc:
        raise InputError(
            f"training run {training_run_id} (from the evaluation) is not in this store"
        ) from exc


def register(
    model: Path,
    evaluation: Evaluation,
    validation: Validation,
    *,
    model_name: str = "simrec",
    git_sha: str = "unknown",
    pipeline_run_id: str = "unknown",
    experiment: str = DEFAULT_EXPERIMENT,
) -> Registration:
    """Registers the validated folder as a new version, sets aliases; returns the registration record."""
    training_run = _check_inputs(model, evaluation, validation)
    previous = champion(model_name)
    previous_version = str(previous.version) if previous else None  # MLflow gives int or str
    record = {"name": model_name, "champion_uri": f"models:/{model_name}@{CHAMPION}"}
    record |= {"model_id": evaluation.model_id, "previous_champion": previous_version}
    if (existing := version_with_digest(model_name, validation.digest)) is not None:
        # A re-run with unchanged inputs (KFP cannot cache this step: its pipeline run id differs every
        # run) registers nothing new and moves no alias.
        number = str(existing.version)
        log.info("%s version %s is this validated folder already; nothing registered", model_name, number)
        return Registration(
            **record,
            version=int(number),
            aliases=aliases(existing),
            model_uri=model_uri(existing),
            mlflow_run_id=existing.run_id,
            promoted=False,
            decision=f"already registered as version {number}: nothing changed",
        )
    promote, decision = promotion(evaluation.gate, previous_version)
    tags = version_tags(evaluation, validation, git_sha, pipeline_run_id)
    logged = log_version(
        model, evaluation, validation, training_run, tags, model_name=model_name, experiment=experiment
    )
    number = logged.version
    # Before any alias moves: a version that does not come back intact, or does not load, stays unaliased.
    check_round_trip(client().get_model_version(model_name, number), validation.digest)
    settle(
        model_name,
        number,
        decision=decision,
        previous_champion=previous_version,
        promote=promote,
        about=description(evaluation, git_sha, pipeline_run_id, decision),
    )
    registered = client().get_model_version(model_name, number)
    log.info("registered %s version %s (%s)", model_name, number, decision)
    return Registration(
        **record,
        version=int(number),
        aliases=aliases(registered),
        model_uri=model_uri(registered),
        logged_model_id=logged.logged_model_id,
        mlflow_run_id=logged.run_id,
        pipeline_run_id=pipeline_run_id,
        promoted=promote,
        decision=decision,
    )


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
    write_record(args.registered_out, record)
    args.version_out.parent.mkdir(parents=True, exist_ok=True)
    args.version_out.write_text(str(record.version))
    report(f"registered {record.model_uri} (aliases: {', '.join(record.aliases)}); {record.decision}")
