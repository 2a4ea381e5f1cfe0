"""The checks the validate step runs on a recommender package turned MLflow pyfunc, in the serving
environment: that environment is the serve lock's, the package yields sample requests, the pyfunc saves,
loads back, answers its input example and answers the package's smoke queries as recorded when it was
built. Each check is timed and named; the first that fails raises ValidationFailed with one line."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from simrec.infra.errors import InputError
from simrec.recommender.package import ITEMS_FILE, MANIFEST_FILE, SMOKE_K
from simrec.recommender.pyfunc import (
    CODE_FILE,
    OUTPUT_COLUMNS,
    PACKAGE_ARTIFACT,
    image_query,
    item_query,
    signature,
)
from simrec.records import Check

T = TypeVar("T")


class ValidationFailed(InputError):
    """The package did not load or answer correctly as an MLflow pyfunc in the serving environment."""


class Checks:
    """Runs named checks in order, recording each that passed; a failure raises ValidationFailed."""

    def __init__(self) -> None:
        self.passed: list[Check] = []

    def __call__(self, name: str, run: Callable[[], T]) -> T:
        begun = time.perf_counter()
        try:
            result = run()
        except Exception as exc:
            raise ValidationFailed(f"check {name!r} failed: {_one_line(exc)}") from exc
        self.passed.append(Check(name=name, ok=True, seconds=round(time.perf_counter() - begun, 3)))
        return result


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if isinstance(exc, InputError) else f"{exc.__class__.__name__}: {text}"


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


def same_environment(lock: Path) -> list[str]:
    """The lock's pins, when this environment satisfies every one (ValidationFailed otherwise)."""
    pins = lock_pins(lock)
    if differences := environment_differences(pins):
        raise ValidationFailed(f"this environment differs from {lock}: {', '.join(differences[:5])}")
    return pins


def sample_requests(package: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
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


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


def save_pyfunc(
    package: Path, model_out: Path, example: pd.DataFrame, pins: list[str], model_id: str | None
) -> None:
    """The pyfunc around `package`, saved to model_out (pip requirements: the serve lock's pins)."""
    import mlflow

    # MLflow names the artifact's folder after its source (and refuses a symlinked one): a hard-linked
    # view named `package` gives every model the same layout, artifacts/package, at no copying cost.
    model_out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".simrec-validate-", dir=model_out.parent))
    try:
        shutil.copytree(package, staging / PACKAGE_ARTIFACT, copy_function=_link_or_copy)
        # Not code_paths: every process that loads this model (validate, serve, register's check) has
        # already imported the installed simrec, and MLflow only prepends code/ to sys.path, so a bundled
        # copy would be shadowed - shipped but never run. The code that answers is the image's; the pins
        # name that image.
        mlflow.pyfunc.save_model(
            path=str(model_out),
            python_model=str(CODE_FILE),
            artifacts={PACKAGE_ARTIFACT: str(staging / PACKAGE_ARTIFACT)},
            signature=signature(),
            input_example=(example, {"k": SMOKE_K}),
            pip_requirements=pins,
            metadata={"simrec_model_id": model_id},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def answers_input_example(model: Any, example: pd.DataFrame) -> None:
    answer = model.predict(example, params={"k": SMOKE_K})
    if list(answer.columns) != OUTPUT_COLUMNS:
        raise ValidationFailed(f"answer columns {list(answer.columns)}, expected {OUTPUT_COLUMNS}")
    expected_rows = [(q, r) for q in range(len(example)) for r in range(1, SMOKE_K + 1)]
    if list(zip(answer["query"], answer["rank"], strict=True)) != expected_rows:
        raise ValidationFailed(f"expected {SMOKE_K} ranked answers per query, got {len(answer)} rows")


def answers_smoke_queries(model: Any, smoke: list[dict[str, Any]]) -> None:
    """Recommender.check_smoke_queries() semantics, asked through the pyfunc: same ids, same order."""
    problems = []
    for query in smoke:
        requests = {"by_item": item_query(query["item_id"]), "by_image": image_query(query["image"])}
        for way, request in requests.items():
            got = model.predict(pd.DataFrame([request]), params={"k": SMOKE_K})["item_id"].tolist()
            if got != query["expected"][way]:
                problems.append(f"{query['item_id']} {way}: {got} != {query['expected'][way]}")
    if problems:
        raise ValidationFailed(f"{len(problems)} smoke answer(s) changed: {problems[0]}")
