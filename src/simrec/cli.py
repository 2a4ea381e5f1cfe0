"""The simrec command. Each subcommand lives in its own module, imported only when called, because the
step modules need the steps environment (TensorFlow, Spark) and the pipeline ones the control
environment (KFP SDK); see images/."""

from __future__ import annotations

import importlib
import logging
import os
import sys

from simrec.errors import InputError

SUBCOMMANDS = {
    "run": ("simrec.pipeline.cli:run_main", "run the whole pipeline on this machine (embedded mode)"),
    "compile": ("simrec.pipeline.cli:compile_main", "write the pipeline IR YAML for the KFP UI"),
    "submit": ("simrec.pipeline.cli:submit_main", "start the pipeline on a Kubeflow Pipelines endpoint"),
    "docs": ("simrec.pipeline.docs:main", "regenerate components/*/README.md from the component YAML"),
    "ingest": ("simrec.steps.ingest:main", "step: Fashion-MNIST (+ new items) into the Delta tables"),
    "tune": ("simrec.steps.tune:main", "step: Hyperopt TPE over SparkTrials, trials as nested MLflow runs"),
    "train": ("simrec.steps.train:main", "step: metric-learning model with Horovod, input via Petastorm"),
    "evaluate": ("simrec.steps.evaluate:main", "step: retrieval metrics, ANN index, package, blessing gate"),
    "export-onnx": ("simrec.onnx_export:main", "add embedding.onnx to a recommender package (re-export)"),
    "validate": ("simrec.steps.validate:main", "step: the package as an MLflow pyfunc, loaded and queried"),
    "register": ("simrec.steps.register:main", "step: the validated model as a new registered version"),
    "lineage": ("simrec.model_lineage:main", "print a registered version's chain back to data and code"),
    "serve": (
        "simrec.serving.cli:main",
        "similar-items endpoint: JSON, Open Inference Protocol v2, web page",
    ),
    "deploy": ("simrec.steps.deploy:deploy_main", "step: hot-swap a registered version into the server"),
    "rollback": ("simrec.steps.deploy:rollback_main", "switch the server back to its previous version"),
    "refresh": ("simrec.steps.refresh:main", "add catalogue items the server lacks to its live index"),
}


def _usage() -> str:
    lines = ["usage: simrec <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "simrec <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    if argv[0] not in SUBCOMMANDS:
        sys.exit(f"simrec: unknown command {argv[0]!r}\n\n{_usage()}")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, function = SUBCOMMANDS[argv[0]][0].split(":")
    entrypoint = getattr(importlib.import_module(module_name), function)
    try:
        entrypoint(argv[1:])
    except InputError as exc:
        sys.exit(f"simrec {argv[0]}: error: {exc}")
