"""simrec compile | run | submit: the pipeline's commands (control environment)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from simrec.config import PROFILES, RunnerConfig, SimrecConfig, load_config
from simrec.infra import paths
from simrec.infra.code_version import git_sha
from simrec.infra.errors import InputError
from simrec.pipeline.backend import SUPPORT_MATRIX
from simrec.pipeline.definition import PIPELINE_NAME, compile_pipeline, pipeline_arguments


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--param takes NAME=VALUE, got {pair!r}")
        params[name] = yaml.safe_load(value)
    return params


def _common(parser: argparse.ArgumentParser, default_profile: str) -> None:
    parser.add_argument("--profile", choices=PROFILES, default=default_profile)
    parser.add_argument("--components-dir", type=Path, help="component YAML folder (default: components/)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="set a pipeline parameter"
    )


def _arguments(config: SimrecConfig, args: argparse.Namespace) -> dict[str, Any]:
    return (
        pipeline_arguments(config, args.components_dir) | {"git_sha": git_sha()} | _parse_params(args.param)
    )


def _short(value: Any) -> str:
    """An output for the summary table: paths in full, but a JSON parameter (the lineage) would fill the
    screen."""
    if not isinstance(value, dict | list):
        return str(value)
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} characters, in run.json)"


def compile_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="simrec compile", description="Write the pipeline IR YAML.")
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument("--components-dir", type=Path)
    parser.add_argument("--output", type=Path, default=paths.CHECKOUT / "pipelines" / "simrec.yaml")
    args = parser.parse_args(argv)
    path = compile_pipeline(load_config(args.profile), args.output, args.components_dir)
    oldest, newest = SUPPORT_MATRIX["Kubeflow Pipelines backend"]
    print(
        f"compiled {PIPELINE_NAME} ({args.profile} profile) to {path}: "
        f"runs as written on KFP {oldest} to {newest} (checked; docs/cluster.md)"
    )


def run_main(argv: list[str] | None = None) -> None:
    from simrec.runner.containers import ContainerMode
    from simrec.runner.embedded import EmbeddedRunner
    from simrec.runner.ir import load_ir

    parser = argparse.ArgumentParser(
        prog="simrec run", description="Compile the pipeline and run it on this machine (embedded mode)."
    )
    _common(parser, "embedded")
    parser.add_argument("--run-name", help="folder name of this run under storage.runs_dir")
    parser.add_argument(
        "--verbose", action="store_true", help="show every line of the steps' output, not only progress"
    )
    parser.add_argument(
        "--containers",
        action="store_true",
        help="run each task in its own image with podman, as in a pod (built by scripts/build-images "
        "--local-base; conf: runner.containers)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.profile)
    if args.containers:
        config = config.model_copy(update={"runner": RunnerConfig(containers=True)})
    arguments = _arguments(config, args)
    run_name = args.run_name or f"{PIPELINE_NAME}-{datetime.now():%Y%m%d-%H%M%S}"
    runs_dir = Path(config.storage.runs_dir)
    if (runs_dir / run_name).exists():
        raise InputError(f"run name {run_name!r} is already used ({runs_dir / run_name}); choose another")
    package = compile_pipeline(config, runs_dir / run_name / "pipeline.yaml", args.components_dir)
    runner = EmbeddedRunner(
        envs_dir=paths.envs_dir(),
        runs_dir=runs_dir,
        # What embedded runs add to each task's environment (the IR carries the rest): Spark binds to
        # loopback on one machine; on a cluster the pod's address is the right one, so the IR has none.
        step_env={"MLFLOW_DISABLE_TELEMETRY": "true", "SPARK_LOCAL_IP": "127.0.0.1"},
        images_dir=paths.images_dir(),
        verbose=args.verbose,
        containers=ContainerMode(*config.runner.shared_folders(config)) if config.runner.containers else None,
    )
    print(f"simrec run {run_name}: profile {args.profile}, pipeline {package}")
    summary = runner.run(load_ir(package), arguments, run_name=run_name)
    print(f"\n{'task':<12} {'status':<10} {'seconds':>8}  outputs")
    for task in summary.tasks:
        outputs = ", ".join(f"{k}={_short(v)}" for k, v in (task.artifacts | task.parameters).items())
        print(f"{task.name:<12} {task.status:<10} {task.seconds:>8.1f}  {outputs or task.error}")
    print(f"\nrun folder: {summary.run_dir}  (logs: <task>/log.txt, summary: run.json)")
    print(f"delta tables: {config.storage.lake_uri}")
    if not summary.succeeded:
        raise SystemExit(1)


# A bearer token for the KFP endpoint (a Kubeflow ServiceAccount token, an OIDC id token): read from the
# environment, never a flag, so it shows neither in process lists nor in CI logs.
KFP_TOKEN_ENV = "SIMREC_KFP_TOKEN"


def submit_main(argv: list[str] | None = None) -> None:
    import kfp

    parser = argparse.ArgumentParser(
        prog="simrec submit",
        description="Compile the pipeline and start it on a Kubeflow Pipelines endpoint.",
        epilog=f"Authentication: a bearer token in ${KFP_TOKEN_ENV} is sent with every request; "
        "without it, no credentials are sent.",
    )
    _common(parser, "full")
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")
    parser.add_argument("--experiment", default=PIPELINE_NAME)
    parser.add_argument(
        "--namespace",
        help="the Kubeflow profile's namespace the run belongs to (multi-user Kubeflow requires it; "
        "standalone KFP runs everything in its own namespace and takes none)",
    )
    parser.add_argument("--schedule", metavar="CRON", help="create a recurring run on this cron schedule")
    args = parser.parse_args(argv)
    config = load_config(args.profile)
    arguments = _arguments(config, args)
    name = f"{PIPELINE_NAME}-{arguments['git_sha'][:12]}-{datetime.now():%Y%m%d-%H%M%S}"
    with tempfile.TemporaryDirectory() as tmp:
        package = str(compile_pipeline(config, Path(tmp) / "pipeline.yaml", args.components_dir))
        client = kfp.Client(host=args.host, existing_token=os.environ.get(KFP_TOKEN_ENV) or None)
        if client.get_kfp_healthz().multi_user and not args.namespace:
            # the API server would refuse the experiment: "An experiment cannot have an empty namespace
            # in multi-user mode" (backend/src/apiserver/server/experiment_server.go)
            raise InputError(
                f"{args.host} is a multi-user Kubeflow: give --namespace (your profile's namespace)"
            )
        experiment = client.create_experiment(name=args.experiment, namespace=args.namespace)
        if args.schedule:
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id,
                job_name=name,
                cron_expression=args.schedule,
                pipeline_package_path=package,
                params=arguments,
            )
            print(f"recurring run {job.recurring_run_id} ({args.schedule}) in experiment {args.experiment}")
        else:
            run = client.create_run_from_pipeline_package(
                package, arguments=arguments, run_name=name, experiment_id=experiment.experiment_id
            )
            link = f"{args.host.rstrip('/')}/#/runs/details/{run.run_id}"
            print(f"run {run.run_id} in experiment {args.experiment}: {link}")
