"""The code version: a cache input, so every different work tree must have a different one."""

import subprocess
from pathlib import Path

import pytest

from simrec.infra.code_version import git_sha


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_uncommitted_changes_and_untracked_files_each_change_the_version(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SIMREC_GIT_SHA", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "step.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("ignored/\n")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_sha(repo) == head
    (repo / "ignored").mkdir()
    (repo / "ignored" / "out.txt").write_text("build output")
    assert git_sha(repo) == head  # ignored files are not code
    (repo / "step.py").write_text("x = 2\n")
    first = git_sha(repo)
    (repo / "step.py").write_text("x = 3\n")
    second = git_sha(repo)
    assert first.startswith(f"{head}-dirty-") and second.startswith(f"{head}-dirty-") and first != second
    (repo / "new_step.py").write_text("y = 1\n")
    third = git_sha(repo)
    (repo / "new_step.py").write_text("y = 2\n")
    assert len({second, third, git_sha(repo)}) == 3  # an untracked file's content counts
    (repo / "step.py").write_text("x = 3\n")
    assert git_sha(repo) == git_sha(repo)  # stable for one tree


def test_outside_git_and_the_override(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SIMREC_GIT_SHA", raising=False)
    assert git_sha(tmp_path) == "unknown"
    monkeypatch.setenv("SIMREC_GIT_SHA", "abc123")
    assert git_sha(tmp_path) == "abc123"


def test_lineage_is_read_from_json_text_or_a_file(tmp_path) -> None:
    from simrec.data.lineage import read_lineage
    from simrec.infra.errors import InputError
    from simrec.records import Table

    text = '{"tables": {"train": {"uri": "/lake/train", "version": 3}}}'
    path = tmp_path / "lineage.json"
    path.write_text(text)
    assert read_lineage(text) == read_lineage(path) == read_lineage(str(path))
    # through a KFP STRUCT parameter (protobuf) every number arrives as a double
    as_struct = '{"tables": {"train": {"uri": "/lake/train", "version": 3.0, "rows": 200.0}}}'
    assert read_lineage(as_struct).tables.train == Table(uri="/lake/train", version=3, rows=200)
    missing_train = r"--lineage: not an ingest lineage JSON \(tables\.train: Field required"
    with pytest.raises(InputError, match=missing_train):
        read_lineage('{"tables": {}}')
    with pytest.raises(InputError, match=r"missing.json: not an ingest lineage file"):
        read_lineage(str(tmp_path / "missing.json"))
