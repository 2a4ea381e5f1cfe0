"""`simrec deploy --package DIR --version LABEL` with no --server: starts a detached local server (state
in a folder), deploys into it; a second deploy reuses it; `simrec rollback` switches back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests
from serve_helpers import free_port, server_env

from simrec.infra.progress import MARKER
from simrec.steps.deploy import build_parser, deploy_main


def run(*args: str, state, port: int) -> dict:
    command = [sys.executable, "-m", "simrec", *args, "--state-dir", str(state), "--port", str(port)]
    done = subprocess.run(command, env=server_env(None), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # the answer as JSON, then the step's marked result line for `simrec run`
    return json.loads("\n".join(line for line in done.stdout.splitlines() if not line.startswith(MARKER)))


def test_deploy_starts_local_server(packages, tmp_path):
    state, port = tmp_path / "serve-state", free_port()
    first = run("deploy", "--package", str(packages["v1"]), "--version", "1", state=state, port=port)
    record = json.loads((state / "server.json").read_text())
    try:
        assert first["outcome"] == "serving" and first["server"] == f"http://127.0.0.1:{port}"
        for name in ("token", "admin-token"):
            assert oct((state / name).stat().st_mode & 0o777) == "0o600"
        status = first["server"] + "/admin/status"
        assert requests.get(status, timeout=10).status_code == 401
        query = {"Authorization": f"Bearer {(state / 'token').read_text().strip()}"}
        assert requests.get(status, headers=query, timeout=10).status_code == 403
        admin = {"Authorization": f"Bearer {(state / 'admin-token').read_text().strip()}"}
        assert requests.get(status, headers=admin, timeout=10).json()["ready"]
        # the package given by hand was copied into the server's package root, and loaded from there
        assert (state / "packages" / "by-hand-v1" / "recommender.json").exists()

        second = run("deploy", "--package", str(packages["v2"]), "--version", "2", state=state, port=port)
        assert second["serving"]["version"] == "2"
        assert json.loads((state / "server.json").read_text())["pid"] == record["pid"]  # same server

        back = run("rollback", state=state, port=port)
        assert back["serving"]["version"] == "1"
        command = [sys.executable, "-m", "simrec", "deploy", "--package", str(packages["bad-smoke"])]
        command += ["--version", "3", "--state-dir", str(state), "--port", str(port)]
        refused = subprocess.run(command, env=server_env(None), capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and "smoke queries" in refused.stderr
    finally:
        os.kill(record["pid"], signal.SIGTERM)  # the server this test started (detached: not our child)


def test_the_pipelines_flags_mean_what_a_person_types(capsys):
    """The component passes every flag (KFP's launcher has no optional arguments before 2.17): an empty
    --server/--state-dir and an empty --kserve object mean "not given", and --model-name with --alias is
    MODEL@ALIAS (the launcher cannot join two inputs into one argument)."""
    args = build_parser().parse_args(["--model-name", "simrec", "--alias", "champion", "--server", "",
                                      "--kserve", "{}", "--vector-engine", "{}",
                                      "--state-dir", ""])  # fmt: skip
    assert (args.server, args.kserve, args.vector_engine, args.state_dir) == (None, None, None, None)
    assert build_parser().parse_args(["--kserve", '{"name": "x"}']).kserve == '{"name": "x"}'
    engine = '{"uri": "http://milvus:19530"}'
    with pytest.raises(SystemExit):  # the engine is the KServe predictor's; a simrec serve has its own flag
        deploy_main(["simrec@champion", "--vector-engine", engine])
    assert "--vector-engine is for --kserve" in capsys.readouterr().err
    for argv in (["--model-name", "simrec"], ["simrec@champion", "--model-name", "simrec", "--alias", "x"]):
        with pytest.raises(SystemExit):
            deploy_main(argv)
        assert "--model-name and --alias go together" in capsys.readouterr().err
