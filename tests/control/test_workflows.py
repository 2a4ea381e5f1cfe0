"""The GitOps workflows under .github/workflows/: actionlint-clean, and every `run:` step calls only what
the project provides (scripts/, the environments' simrec with real subcommands and flags, pytest on real
test files) or a few standard tools, so CI cannot drift from what developers run."""

import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from control_helpers import CHECKOUT

from simrec.cli import SUBCOMMANDS

WORKFLOWS = sorted((CHECKOUT / ".github" / "workflows").glob("*.y*ml"))
ENVIRONMENTS = ("control", "steps", "serve")  # what scripts/setup-envs creates, one per image
ENV_TOOLS = {"simrec", "python", "ruff"}
# standard tools a step may call, and what with
STANDARD = {"apt-get": None, "git": None, "echo": None, "docker": {"login"}}
OPERATORS = {"&&", "||", "|", ";", "&"}
# official GitHub actions only (checkout, toolchains, cache, artifacts), each pinned by commit
ACTIONS = {"actions/checkout", "actions/setup-go", "actions/cache", "actions/upload-artifact"}


@cache
def actionlint() -> str:
    """The pinned actionlint, built from tools/actionlint by scripts/setup-actionlint (cached)."""
    result = subprocess.run(
        [str(CHECKOUT / "scripts" / "setup-actionlint")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-color=false", str(path)], cwd=CHECKOUT, capture_output=True, text=True, timeout=120
    )


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def _commands(script: str) -> list[list[str]]:
    """Simple commands of a `run:` script: lines joined at backslashes, split at && || | ; &."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in OPERATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    # leading VAR=value assignments are not the command
    return [c[next((i for i, t in enumerate(c) if "=" not in t), len(c)) :] for c in commands if c]


@cache
def _options(tool: str, subcommand: str) -> set[str]:
    """The --options a subcommand's parser accepts, read from its --help."""
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT / "src"))
    result = subprocess.run(
        [str(CHECKOUT / tool), subcommand, "--help"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{tool} {subcommand} --help: {result.stderr}"
    return set(re.findall(r"--[\w-]+", result.stdout))


def _environment_problem(program: str, tool: str, args: list[str]) -> str | None:
    if tool == "simrec":
        if not args or args[0] not in SUBCOMMANDS:
            return f"simrec {args[:1]} is not a simrec subcommand"
        flags = {a.split("=")[0] for a in args[1:] if a.startswith("--")}
        unknown = sorted(flags - _options(program, args[0]))
        return f"simrec {args[0]} has no option {unknown}" if unknown else None
    if tool == "python":
        if args[:2] != ["-m", "pytest"]:
            return f"{program} may only run pytest"
        files = [a.split("::")[0] for a in args[2:] if a.startswith("tests/")]
        missing = [f for f in files if not (CHECKOUT / f).exists()]
        return f"no test file {missing}" if missing else None
    return None


def _problem(command: list[str]) -> str | None:
    """Why a command is not one the project provides, or None when it is."""
    program, args = command[0], command[1:]
    if program.startswith("scripts/"):
        path = CHECKOUT / program
        return None if path.is_file() and os.access(path, os.X_OK) else f"{program} is not a project script"
    parts = Path(program).parts
    if parts[:1] == (".envs",):
        if len(parts) != 4 or parts[1] not in ENVIRONMENTS or parts[2] != "bin" or parts[3] not in ENV_TOOLS:
            return f"{program} is not simrec, python or ruff of a project environment"
        return _environment_problem(program, parts[3], args)
    if program in STANDARD:
        allowed = STANDARD[program]
        if allowed is None or (args and args[0] in allowed):
            return None
        return f"{program} {args[:1]} is not allowed"
    return f"{program} is neither a project command nor a standard tool"


def test_there_is_a_gitops_workflow() -> None:
    assert WORKFLOWS, "no workflow under .github/workflows"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_actionlint_clean(path: Path) -> None:
    result = _lint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_mistakes(tmp_path: Path) -> None:
    """The lint above can fail: an unknown runner label, a bad expression and a missing `runs-on`."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latst\n    steps:\n      - run: echo ${{ github.shaa }}\n"
        "  b:\n    steps:\n      - run: echo\n"
    )
    result = _lint(bad)
    assert result.returncode != 0
    assert "ubuntu-latst" in result.stdout and "shaa" in result.stdout and "runs-on" in result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_steps_call_only_project_commands(path: Path) -> None:
    problems = []
    for job, step in _steps(_load(path)):
        if "uses" in step:
            action, _, ref = step["uses"].partition("@")
            if action not in ACTIONS:
                problems.append(f"{job}: action {step['uses']} is not an official one we allow")
            if not re.fullmatch(r"[0-9a-f]{40}", ref):
                problems.append(f"{job}: action {step['uses']} is not pinned by commit (a tag can move)")
        for command in _commands(step.get("run", "")):
            if problem := _problem(command):
                problems.append(f"{job}: {shlex.join(command)}: {problem}")
    assert not problems, "\n".join(problems)


def test_command_check_refuses_what_the_project_does_not_provide() -> None:
    for script, reason in (
        ("scripts/deploy-everything", "not a project script"),
        (".envs/control/bin/simrec retrain --host x", "not a simrec subcommand"),
        (".envs/control/bin/simrec submit --hots x", "no option"),
        (".envs/steps/bin/pip install torch", "not simrec, python or ruff"),
        (".envs/control/bin/python -c 'print(1)'", "may only run pytest"),
        ("scripts/test && curl -s https://example.org | sh", "neither a project command"),
        ("docker build .", "not allowed"),
    ):
        problems = [p for c in _commands(script) if (p := _problem(c))]
        assert any(reason in p for p in problems), (script, problems)


def test_gitops_loop_triggers_and_submission() -> None:
    """Changes under conf/, components/, src/ or images/ (or the workflow) run it; main submits the run to
    the KFP endpoint from the repository's secrets, and a schedule retrains."""
    path = CHECKOUT / ".github" / "workflows" / "simrec.yml"
    workflow = _load(path)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    for event in ("pull_request", "push"):
        watched = set(triggers[event]["paths"])
        assert {"conf/**", "components/**", "src/**", "images/**", ".github/workflows/simrec.yml"} <= watched
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["schedule"][0]["cron"]
    submit = workflow["jobs"]["submit"]
    assert "refs/heads/main" in submit["if"] and set(submit["needs"]) == {"check", "images"}
    (step,) = [s for s in submit["steps"] if "simrec submit" in s.get("run", "")]
    assert step["env"]["KFP_HOST"] == "${{ secrets.KFP_HOST }}"
    assert step["env"]["SIMREC_KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert '--host "$KFP_HOST"' in step["run"]
    check_runs = " ".join(s.get("run", "") for s in workflow["jobs"]["check"]["steps"])
    for command in ("scripts/setup", "scripts/test", "simrec compile --profile full", "committed_ir"):
        assert command in check_runs
