"""Where the code came from: the git commit recorded with every run and model, and a cache input."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from simrec.infra.paths import CHECKOUT


def _git(checkout: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=checkout, capture_output=True, check=True).stdout


def git_sha(checkout: Path = CHECKOUT) -> str:
    """HEAD's commit; with uncommitted changes `<sha>-dirty-<digest>`, the digest covering the diff against
    HEAD and the content of untracked (not ignored) files, so two different dirty trees never share a
    code version (it is a cache input of every step). 'unknown' outside git. SIMREC_GIT_SHA wins: CI and
    GitOps jobs that build from a commit, not a checkout, set it."""
    if sha := os.environ.get("SIMREC_GIT_SHA"):
        return sha
    try:
        head = _git(checkout, "rev-parse", "HEAD").decode().strip()
        diff = _git(checkout, "diff", "HEAD", "--binary")
        untracked = _git(checkout, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    untracked = sorted(name for name in untracked if name)
    if not diff and not untracked:
        return head
    digest = hashlib.sha256(diff)
    for name in untracked:
        path = checkout / name.decode()
        digest.update(name + b"\0")
        if path.is_file() and not path.is_symlink():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{head}-dirty-{digest.hexdigest()[:12]}"
