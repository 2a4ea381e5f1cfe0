"""Every `simrec <command> …` the README shows parses with that command's real parser, in the environment
the command runs in: its flags exist, and it names every flag the command requires. Placeholders
(DIR, FILE, N, …) get a value of their kind, `a|b` takes `a`, and optional parts ([…]) are tried both
left out and given."""

import json
import os
import re
import subprocess

import pytest
from control_helpers import CHECKOUT

from simrec.cli import SUBCOMMANDS

ENVIRONMENT = {name: command.image for name, command in SUBCOMMANDS.items()}  # where each runs
PASSED_ON = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}  # a worktree's src, if set
VALUES = {"DIR": "/tmp/x", "FILE": "/tmp/x", "JSON": "{}", "URL": "http://127.0.0.1:9", "CRON": "0 3 * * 1"}
# Parse only: each parser's parse_args raises this once it has accepted the arguments, so nothing runs.
PARSE_ONLY = """
import argparse, json, sys
class Parsed(Exception): pass
accept = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    accept(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_args
from simrec.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        results.append("ran")
    except Parsed:
        results.append("ok")
    except SystemExit as exc:
        results.append(f"refused: {exc}")
print(json.dumps(results))
"""


def _synopses() -> list[str]:
    readme = (CHECKOUT / "README.md").read_text()
    spans = [" ".join(s.split()) for s in re.findall(r"`(simrec [a-z-]+ [^`]+)`", readme)]
    return [s for s in spans if s.split()[1] in ENVIRONMENT]


def _argv(synopsis: str, optional: bool) -> list[str]:
    text = synopsis.replace("…", "")
    if not optional:
        while re.search(r"\[[^\[\]]*\]", text):
            text = re.sub(r"\[[^\[\]]*\]", "", text)
    words = text.replace("[", " ").replace("]", " ").split()[1:]
    firsts = [word.split("|")[0] for word in words]
    return [VALUES.get(word, "1" if word.isupper() else word) for word in firsts]


def test_every_readme_synopsis_parses_with_its_command() -> None:
    synopses = _synopses()
    assert len(synopses) >= 12, synopses  # the README's step and pipeline synopses were found
    problems = []
    for environment in sorted(set(ENVIRONMENT.values())):
        mine = [s for s in synopses if ENVIRONMENT[s.split()[1]] == environment]
        argvs = [_argv(s, optional) for s in mine for optional in (False, True)]
        python = CHECKOUT / ".envs" / environment / "bin" / "python"
        result = subprocess.run(
            [str(python), "-c", PARSE_ONLY, json.dumps(argvs)],
            capture_output=True,
            text=True,
            timeout=300,
            # a store named, so that commands typed by hand do not look for the embedded run's first
            env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "sqlite:////nowhere.db"} | PASSED_ON,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outcomes = json.loads(result.stdout.strip().splitlines()[-1])
        errors = iter(line for line in result.stderr.splitlines() if "error:" in line)
        for argv, outcome in zip(argvs, outcomes, strict=True):
            if outcome != "ok":
                problems.append(f"{environment}: simrec {' '.join(argv)} -> {outcome} {next(errors, '')}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("synopsis", "expected"),
    [
        ("simrec tune --lineage FILE [--max-evals N]", ["tune", "--lineage", "/tmp/x"]),
        (
            "simrec ingest --source DIR|URL [--batch DIR [--batch-table train|test]]",
            ["ingest", "--source", "/tmp/x"],
        ),
    ],
)
def test_optional_parts_are_left_out_for_the_required_check(synopsis, expected) -> None:
    assert _argv(synopsis, optional=False) == expected
    assert "--batch-table" in _argv(synopsis, optional=True) or "--max-evals" in _argv(
        synopsis, optional=True
    )


def test_a_wrong_flag_is_caught() -> None:
    """The check can fail: a flag the command does not have is refused by its parser."""
    python = CHECKOUT / ".envs" / "control" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", PARSE_ONLY, json.dumps([["compile", "--no-such-flag"]])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1])[0].startswith("refused"), result.stderr


def _simrec(environment: str, *args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(cwd)} | PASSED_ON
    python = CHECKOUT / ".envs" / environment / "bin" / "python"
    return subprocess.run(
        [str(python), "-m", "simrec", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_command_in_the_wrong_environment_says_which_one_runs_it(tmp_path) -> None:
    result = _simrec("control", "lineage", "simrec@champion", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "runs in the steps image's environment (.envs/steps/bin/simrec lineage" in result.stderr


def test_lineage_by_hand_finds_the_runs_store_or_says_where_to_run_it(tmp_path) -> None:
    """Outside the folder `simrec run` ran in there is no store: said so, and no empty store is left."""
    result = _simrec("steps", "lineage", "simrec@champion", cwd=tmp_path)
    assert f"no MLflow store at {tmp_path / '.simrec' / 'mlflow.db'}" in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())
