"""The simrec command. Each subcommand lives in its own module, imported only when called, because the
step modules need the steps environment (TensorFlow, Spark) and the pipeline ones the control
environment (KFP SDK); see images/."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import NamedTuple

from simrec.infra import paths
from simrec.infra.errors import InputError


class Command(NamedTuple):
    target: str  # module:function
    image: str  # whose environment runs it (images/<image>, .envs/<image>)
    summary: str


SUBCOMMANDS = {
    "run": Command(
        "simrec.pipeline.cli:run_main",
        "control",
        "run the whole pipeline on this machine (embedded mode)",
    ),
    "compile": Command(
        "simrec.pipeline.cli:compile_main", "control", "write the pipeline IR YAML for the KFP UI"
    ),
    "submit": Command(
        "simrec.pipeline.cli:submit_main",
        "control",
        "start the pipeline on a Kubeflow Pipelines endpoint",
    ),
    "docs": Command(
        "simrec.pipeline.docs:main",
        "control",
        "regenerate components/*/README.md from the component YAML",
    ),
    "ingest": Command(
        "simrec.steps.ingest:main",
        "steps",
        "step: Fashion-MNIST (+ new items) into the Delta tables",
    ),
    "tune": Command(
        "simrec.steps.tune:main",
        "steps",
        "step: Hyperopt TPE over SparkTrials, trials as nested MLflow runs",
    ),
    "train": Command(
        "simrec.steps.train:main",
        "steps",
        "step: metric-learning model with Horovod, input via Petastorm",
    ),
    "evaluate": Command(
        "simrec.steps.evaluate:main",
        "steps",
        "step: retrieval metrics, ANN index, package, blessing gate",
    ),
    "export-onnx": Command(
        "simrec.recommender.reexport:main",
        "steps",
        "add embedding.onnx to a recommender package (re-export)",
    ),
    "validate": Command(
        "simrec.steps.validate:main",
        "serve",
        "step: the package as an MLflow pyfunc, loaded and queried",
    ),
    "register": Command(
        "simrec.steps.register:main",
        "steps",
        "step: the validated model as a new registered version",
    ),
    "lineage": Command(
        "simrec.registry.lineage:main",
        "steps",
        "print a registered version's chain back to data and code",
    ),
    "serve": Command(
        "simrec.serving.cli:main",
        "serve",
        "similar-items endpoint: JSON, Open Inference Protocol v2, web page",
    ),
    "deploy": Command(
        "simrec.steps.deploy:deploy_main",
        "steps",
        "step: hot-swap a registered version into the server",
    ),
    "rollback": Command(
        "simrec.steps.deploy:rollback_main",
        "steps",
        "switch the server back to its previous version",
    ),
    "refresh": Command(
        "simrec.steps.refresh:main",
        "steps",
        "add catalogue items the server lacks to its live index",
    ),
    "vector-engine": Command(
        "simrec.retrieval.engine_cli:main",
        "steps",
        "a package's vectors in a Milvus collection; the serving alias",
    ),
}


def _usage() -> str:
    lines = ["usage: simrec <command> [options]", "", "commands:"]
    lines += [f"  {name:<11} {c.summary} [{c.image}]" for name, c in SUBCOMMANDS.items()]
    lines += ["", "simrec <command> --help shows a command's options."]
    return "\n".join(lines)


# Commands a user types after `simrec run` that use the MLflow store it wrote: True where nothing but
# reading it makes sense (register may start a store; deploy needs one only for --model-name).
USES_THE_RUNS_STORE = {"lineage": True, "register": False, "deploy": False}


def _the_runs_store(required: bool) -> None:
    """Without MLFLOW_TRACKING_URI, a command typed by hand in a checkout uses the store `simrec run`
    wrote (the embedded profile's), not MLflow's default in the current folder. Pipeline tasks get theirs
    from the IR, so this sets nothing for them; an installed image has no conf/ and is left alone."""
    if "MLFLOW_TRACKING_URI" in os.environ or not (paths.conf_dir() / "embedded").is_dir():
        return
    from simrec.config import load_config
    from simrec.registry.tracking import ARTIFACT_ROOT_ENV

    storage = load_config("embedded").storage
    database = storage.mlflow_tracking_uri.removeprefix("sqlite:///")
    if database != storage.mlflow_tracking_uri and not os.path.exists(database):
        if not required:
            return
        # MLflow would create an empty store here and answer that nothing is registered
        raise InputError(
            f"no MLflow store at {database}: run this where `simrec run` ran (the embedded profile's "
            "paths are relative to the current folder), or set MLFLOW_TRACKING_URI"
        )
    os.environ["MLFLOW_TRACKING_URI"] = storage.mlflow_tracking_uri
    if storage.mlflow_artifact_root:
        os.environ.setdefault(ARTIFACT_ROOT_ENV, storage.mlflow_artifact_root)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    if argv[0] not in SUBCOMMANDS:
        sys.exit(f"simrec: unknown command {argv[0]!r}\n\n{_usage()}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = SUBCOMMANDS[argv[0]]
    module_name, function = command.target.split(":")
    try:
        entrypoint = getattr(importlib.import_module(module_name), function)
    except ModuleNotFoundError as exc:
        sys.exit(
            f"simrec {argv[0]}: error: this command runs in the {command.image} image's environment "
            f"(.envs/{command.image}/bin/simrec {argv[0]} …); this one lacks {exc.name}"
        )
    try:
        if argv[0] in USES_THE_RUNS_STORE:
            _the_runs_store(required=USES_THE_RUNS_STORE[argv[0]])
        entrypoint(argv[1:])
    except InputError as exc:
        sys.exit(f"simrec {argv[0]}: error: {exc}")
