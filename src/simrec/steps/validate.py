"""Validate step (serve image): the infrastructure check before a model may be registered.

Builds the MLflow pyfunc around a recommender package, saves it, loads it back in this same process -
in the serving environment, with the serving environment's pins - and asks it the input example and the
package's smoke queries, whose answers must equal the ones recorded when the package was built. Any
failure ends the step with one line and no model output, so the pipeline never reaches register."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from simrec.infra import paths
from simrec.infra.files import folder_sha256
from simrec.infra.progress import report
from simrec.recommender.package import MANIFEST_FILE, read_manifest
from simrec.recommender.pyfunc_checks import (
    Checks,
    answers_input_example,
    answers_smoke_queries,
    same_environment,
    sample_requests,
    save_pyfunc,
)
from simrec.records import Validation, write_record


def validate(package: Path, model_out: Path, lock: Path) -> Validation:
    """Saves the pyfunc to model_out and checks it in this process; returns the validation record.
    Raises ValidationFailed (and leaves no model_out) when any check fails."""
    import mlflow

    read_manifest(package)  # a folder that is no package of this format: refused before any check
    started = time.perf_counter()
    check = Checks()
    pins = check("environment matches the serve lock", lambda: same_environment(lock))
    example, smoke = check("sample requests", lambda: sample_requests(package))
    model_id = json.loads((package / MANIFEST_FILE).read_text()).get("model_id")
    if model_out.exists():
        shutil.rmtree(model_out)
    try:
        check("save pyfunc", lambda: save_pyfunc(package, model_out, example, pins, model_id))
        model = check("load pyfunc", lambda: mlflow.pyfunc.load_model(str(model_out)))
        check("input example", lambda: answers_input_example(model, example))
        check("smoke queries", lambda: answers_smoke_queries(model, smoke))
    except BaseException:
        shutil.rmtree(model_out, ignore_errors=True)
        raise
    return Validation(
        ok=True,
        checks=check.passed,
        seconds=round(time.perf_counter() - started, 3),
        digest=folder_sha256(model_out),
        smoke_queries=len(smoke),
        mlflow_version=mlflow.__version__,
        lock=str(lock),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec validate", description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="recommender package folder")
    parser.add_argument("--model-out", type=Path, required=True, help="folder for the validated pyfunc")
    parser.add_argument("--validation-out", type=Path, required=True, help="validation record JSON")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    record = validate(args.package, args.model_out, paths.serve_lock())
    write_record(args.validation_out, record)
    report(
        f"validated {args.package} as an MLflow pyfunc in {record.seconds:.1f} s "
        f"({len(record.checks)} checks, {record.smoke_queries} smoke queries); "
        f"model {args.model_out}, digest {record.digest}"
    )
