"""Validate step (serve image): the infrastructure check before a model may be registered.

Builds the MLflow pyfunc around a recommender package, saves it, loads it back in this same process -
in the serving environment, with the serving environment's pins - and asks it the input example and the
package's smoke queries, whose answers must equal the ones recorded when the package was built. Any
failure ends the step with one line and no model output, so the pipeline never reaches register."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from simrec import paths
from simrec.errors import InputError
from simrec.files import folder_sha256, write_json_atomic
from simrec.progress import report
from simrec.recommender import ITEMS_FILE, MANIFEST_FILE, SMOKE_K, read_manifest
from simrec.recommender_pyfunc import (
    CODE_FILE,
    OUTPUT_COLUMNS,
    PACKAGE_ARTIFACT,
    image_query,
    item_query,
    signature,
)


class ValidationFailed(InputError):
    """The package did not load or answer correctly as an MLflow pyfunc in the serving environment."""


def lock_pins(lock: Path) -> list[str]:
    """The `name==version` lines of a uv/pip lock file."""
    try:
        lines = lock.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{lock}: cannot read the serve lock: {exc.strerror} (SIMREC_SERVE_LOCK)") from exc
    pins = [line.split("#", 1)[0].strip() for line in lines]
    pins = [pin for pin in pins if pin]
    if not pins or not all("==" in pin for pin in pins):
        raise InputError(f"{lock}: not a lock file (expected only name==version lines)")
    return pins


def environment_differences(pins: list[str]) -> list[str]:
    """Pins the running environment does not satisfy: a model validated here would otherwise claim an
    environment it was never run in."""
    differences = []
    for pin in pins:
        name, version = (part.strip() for part in pin.split("==", 1))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differences.append(f"{name}=={version} (installed: {installed or 'missing'})")
    return differences


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if isinstance(exc, InputError) else f"{exc.__class__.__name__}: {text}"


def _sample_requests(package: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The input example (one query of each kind) and the smoke queries with their recorded answers."""
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    smoke = manifest.get("smoke_queries") or []
    if not smoke:
        raise ValidationFailed(f"{package / MANIFEST_FILE}: no smoke queries to check the model with")
    items = pd.read_parquet(package / ITEMS_FILE, columns=["item_id", "image"]).set_index("item_id")
    first = smoke[0]["item_id"]
    example = pd.DataFrame([item_query(first), image_query(bytes(items.at[first, "image"]))])
    for query in smoke:
        query["image"] = bytes(items.at[query["item_id"], "image"])
    return example, smoke


def validate(package: Path, model_out: Path, lock: Path) -> dict[str, Any]:
    """Saves the pyfunc to model_out and checks it in this process; returns the validation record.
    Raises ValidationFailed (and leaves no model_out) when any check fails."""
    import mlflow

    read_manifest(package)  # a folder that is no package of this format: refused before any check
    started = time.perf_counter()
    checks: list[dict[str, Any]] = []

    def check(name: str, run: Callable[[], Any]) -> Any:
        begun = time.perf_counter()
        try:
            result = run()
        except Exception as exc:
            raise ValidationFailed(f"check {name!r} failed: {_one_line(exc)}") from exc
        checks.append({"name": name, "ok": True, "seconds": round(time.perf_counter() - begun, 3)})
        return result

    def same_environment() -> list[str]:
        pins = lock_pins(lock)
        if differences := environment_differences(pins):
            raise ValidationFailed(f"this environment differs from {lock}: {', '.join(differences[:5])}")
        return pins

    pins = check("environment matches the serve lock", same_environment)
    example, smoke = check("sample requests", lambda: _sample_requests(package))
    model_id = json.loads((package / MANIFEST_FILE).read_text()).get("model_id")
    if model_out.exists():
        shutil.rmtree(model_out)
    # MLflow names the artifact's folder after its source (and refuses a symlinked one): a hard-linked
    # view named `package` gives every model the same layout, artifacts/package, at no copying cost.
    model_out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".simrec-validate-", dir=model_out.parent))
    shutil.copytree(package, staging / PACKAGE_ARTIFACT, copy_function=_link_or_copy)
    # Not code_paths: every process that loads this model (validate, serve, register's check) has already
    # imported the installed simrec, and MLflow only prepends code/ to sys.path, so a bundled copy would be
    # shadowed - shipped but never run. The code that answers is the image's; the pins name that image.
    try:
        check(
            "save pyfunc",
            lambda: mlflow.pyfunc.save_model(
                path=str(model_out),
                python_model=str(CODE_FILE),
                artifacts={PACKAGE_ARTIFACT: str(staging / PACKAGE_ARTIFACT)},
                signature=signature(),
                input_example=(example, {"k": SMOKE_K}),
                pip_requirements=pins,
                metadata={"simrec_model_id": model_id},
            ),
        )
        model = check("load pyfunc", lambda: mlflow.pyfunc.load_model(str(model_out)))

        def answers_input_example() -> None:
            answer = model.predict(example, params={"k": SMOKE_K})
            if list(answer.columns) != OUTPUT_COLUMNS:
                raise ValidationFailed(f"answer columns {list(answer.columns)}, expected {OUTPUT_COLUMNS}")
            expected_rows = [(q, r) for q in range(len(example)) for r in range(1, SMOKE_K + 1)]
            if list(zip(answer["query"], answer["rank"], strict=True)) != expected_rows:
                raise ValidationFailed(f"expected {SMOKE_K} ranked answers per query, got {len(answer)} rows")

        check("input example", answers_input_example)

        def answers_smoke_queries() -> None:
            # Recommender.check_smoke_queries() semantics, asked through the pyfunc: same ids, same order.
            problems = []
            for query in smoke:
                for way, request in (
                    ("by_item", item_query(query["item_id"])),
                    ("by_image", image_query(query["image"])),
                ):
                    got = model.predict(pd.DataFrame([request]), params={"k": SMOKE_K})["item_id"].tolist()
                    if got != query["expected"][way]:
                        problems.append(f"{query['item_id']} {way}: {got} != {query['expected'][way]}")
            if problems:
                raise ValidationFailed(f"{len(problems)} smoke answer(s) changed: {problems[0]}")

        check("smoke queries", answers_smoke_queries)
    except BaseException:
        shutil.rmtree(model_out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "ok": True,
        "checks": checks,
        "seconds": round(time.perf_counter() - started, 3),
        "digest": folder_sha256(model_out),
        "smoke_queries": len(smoke),
        "mlflow_version": mlflow.__version__,
        "lock": str(lock),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec validate", description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="recommender package folder")
    parser.add_argument("--model-out", type=Path, required=True, help="folder for the validated pyfunc")
    parser.add_argument("--validation-out", type=Path, required=True, help="validation record JSON")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    record = validate(args.package, args.model_out, paths.serve_lock())
    write_json_atomic(args.validation_out, record)
    report(
        f"validated {args.package} as an MLflow pyfunc in {record['seconds']:.1f} s "
        f"({len(record['checks'])} checks, {record['smoke_queries']} smoke queries); "
        f"model {args.model_out}, digest {record['digest']}"
    )
