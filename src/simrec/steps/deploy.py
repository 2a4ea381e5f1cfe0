"""Deploy step: hot-swap a recommender package into a running `simrec serve`, or roll it back.

The server does the work (load beside the serving version, warm up, smoke queries, atomic switch); this
module asks it over its admin API, with the admin token, and reports the answer. When no server URL is
given, it uses the local server (simrec.serving.local_server), started detached if none answers, and puts
packages in its package root.
With --kserve (a cluster), the same intent is a canary rollout of a KServe InferenceService instead
(simrec.kserve.rollout)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simrec.infra.progress import report
from simrec.records import Registration, read_record
from simrec.runner.containers import SERVE_IMAGE_ENV
from simrec.serving import admin_client
from simrec.serving.cli import ADMIN_TOKEN_VARIABLE
from simrec.serving.local_server import PACKAGES, default_state_dir, ensure_local_server

MANUAL_ONLY = "by hand"  # flags the pipeline's component does not pass
MODEL_BY_HAND = "simrec"  # the served model's name for --storage-uri (simrec serve's default)


def _server(args: argparse.Namespace) -> tuple[str, str | None]:
    """The server's URL and admin token."""
    if args.server:
        return args.server, os.environ.get(ADMIN_TOKEN_VARIABLE)
    local = ensure_local_server(args.state_dir, args.port, image=os.environ.get(SERVE_IMAGE_ENV))
    return local.url, local.admin_token


def _in_package_root(package: Path, version: str, state_dir: Path) -> Path:
    """The local server loads packages only from its package root: a folder given by hand elsewhere is
    copied in (one folder per version label)."""
    root = (state_dir / PACKAGES).resolve()
    if package.resolve().is_relative_to(root):
        return package
    target = root / f"by-hand-v{version}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(package, target)
    return target


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The pipeline passes every flag (KFP's launcher has no optional arguments before 2.17): an empty
    value, or an empty JSON object for --kserve and --vector-engine, means the flag was not given."""
    return lambda text: parse(text) if text.strip() not in ("", "{}") else None


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        type=_or_none(str),
        help=f"server URL (admin token from ${ADMIN_TOKEN_VARIABLE}); default: a local one",
    )
    parser.add_argument(
        "--kserve",
        type=_or_none(str),
        metavar="JSON",
        help="a cluster instead: the KServe InferenceService settings (serve.kserve) as a JSON object",
    )
    parser.add_argument(
        "--state-dir", type=_or_none(Path), help="local server's state folder (default .simrec/serve)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port of the local server (default 8080)")
    parser.add_argument("--result-out", type=Path, help="write the server's answer (JSON) here too")


def _report(answer: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(answer, indent=2, sort_keys=True)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The deploy step's flags (the component YAML's contract test reads them from here)."""
    parser = argparse.ArgumentParser(prog="simrec deploy", description=__doc__.splitlines()[0])
    parser.add_argument(
        "ref", nargs="?", help="registered version: MODEL/VERSION or MODEL@ALIAS (MLflow registry)"
    )
    # The pipeline's way to say MODEL@ALIAS: KFP's launcher cannot join two inputs into one argument.
    parser.add_argument("--model-name", help="registered model (with --alias: the same as MODEL@ALIAS)")
    parser.add_argument("--alias", help="alias of the version to serve, with --model-name")
    parser.add_argument("--registered", type=Path, help="register's record (the pipeline passes it)")
    _add_server_flags(parser)
    parser.add_argument(
        "--vector-engine",
        type=_or_none(str),
        metavar="JSON",
        help="with --kserve: the profile's vector engine (evaluate.vector_engine) as a JSON object; the "
        "predictor reaches it at its uri, with the token from its token_secret",
    )
    by_hand = parser.add_argument_group(MANUAL_ONLY, "serve a package folder that is not registered")
    by_hand.add_argument("--package", type=Path, help="a recommender package folder instead of a reference")
    by_hand.add_argument(
        "--storage-uri", help="with --kserve: a model folder KServe reads (s3://...) instead of a reference"
    )
    by_hand.add_argument("--version", help="version label for --package or --storage-uri")
    return parser


def deploy_main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.model_name) != bool(args.alias) or (args.model_name and args.ref):
        parser.error("--model-name and --alias go together, instead of MODEL@ALIAS")
    if args.model_name:
        args.ref = f"{args.model_name}@{args.alias}"
    by_hand = args.package or args.storage_uri
    if bool(args.ref) == bool(by_hand) or (args.package and args.storage_uri):
        parser.error("give either MODEL/VERSION, --package DIR or --storage-uri URI (with --version LABEL)")
    if by_hand and not args.version:
        parser.error("--package and --storage-uri need --version")
    if args.kserve and (args.server or args.package):
        parser.error("--kserve rolls out to a cluster: no --server or --package with it")
    if args.storage_uri and not args.kserve:
        parser.error("--storage-uri is for --kserve")
    if args.vector_engine and not args.kserve:
        parser.error("--vector-engine is for --kserve (a simrec serve takes --vector-engine-uri itself)")
    if args.ref:
        from simrec.registry import models as registry

        name, by_alias, alias = args.ref.partition("@")
        if by_alias and registry.aliased(name, alias) is None:
            # The pipeline's first runs: nothing blessed yet (or a dry-run gate). Not a failure.
            _report({"outcome": "nothing to deploy", "reason": f"{name} has no {alias} yet"}, args.result_out)
            return
        if args.registered:
            print(f"register: {read_record(Registration, args.registered, 'a registration record').decision}")
    if args.kserve:
        _roll_out_to_kserve(args)
        return
    if args.package:
        package, version = args.package, args.version
    else:
        resolved = registry.resolve(args.ref)
        version = str(resolved.version)
        # One folder per version; the server reads a package only while it loads it.
        target = (args.state_dir or default_state_dir()) / PACKAGES / f"{resolved.name}-v{version}"
        shutil.rmtree(target, ignore_errors=True)
        package = registry.download_package(resolved, target)
    url, token = _server(args)
    if not args.server:
        package = _in_package_root(Path(package), version, args.state_dir or default_state_dir())
    answer = admin_client.deploy(url, token, package, version) | {"server": url}
    _report(answer, args.result_out)
    serving = answer.get("serving") or {}
    report(f"{answer.get('outcome')}: {url} serves version {serving.get('version')}")


def _roll_out_to_kserve(args: argparse.Namespace) -> None:
    from simrec.kserve import rollout
    from simrec.kserve import settings as kserve_settings
    from simrec.kserve.api import InferenceServices
    from simrec.kserve.manifest import ServedModel, render_inference_service

    settings = kserve_settings.settings_from_json(args.kserve)
    engine = kserve_settings.vector_engine_from_json(args.vector_engine) if args.vector_engine else None
    if args.storage_uri:
        model = ServedModel(MODEL_BY_HAND, args.version, args.storage_uri)
    else:
        from simrec.registry import models as registry

        resolved = registry.resolve(args.ref)
        location = registry.storage_uri(resolved, settings.artifacts_destination)
        model = ServedModel(resolved.name, str(resolved.version), location)
    manifest = render_inference_service(kserve_settings.endpoint(settings, engine), model)
    described = {"model": {"name": model.name, "version": model.version, "storage_uri": model.storage_uri}}
    try:
        answer = rollout.roll_out(
            InferenceServices(),
            manifest,
            canary_percent=settings.canary_percent,
            promote=settings.promote,
            timeout_s=settings.timeout_s,
            poll_s=settings.poll_s,
        )
    except rollout.RolloutFailed as failed:
        _report(failed.record | described, args.result_out)  # why, and what serves instead
        raise
    _report(answer | described, args.result_out)
    where = answer["inference_service"]
    report(f"{answer['outcome']}: {where} serves {model.name} version {model.version} ({answer['revision']})")


def rollback_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="simrec rollback", description=admin_client.rollback.__doc__)
    _add_server_flags(parser)
    args = parser.parse_args(argv)
    if args.kserve:
        from simrec.kserve import rollout
        from simrec.kserve import settings as kserve_settings
        from simrec.kserve.api import InferenceServices

        settings = kserve_settings.settings_from_json(args.kserve)
        services = InferenceServices()
        answer = rollout.roll_back(
            services,
            kserve_settings.namespace(settings),
            settings.name,
            timeout_s=settings.timeout_s,
            poll_s=settings.poll_s,
        )
        _report(answer, args.result_out)
        return
    url, token = _server(args)
    _report(admin_client.rollback(url, token) | {"server": url}, args.result_out)
