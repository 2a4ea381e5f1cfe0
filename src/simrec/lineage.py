"""Where the code came from: the git commit recorded with every run and model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from simrec.paths import CHECKOUT


def git_sha(checkout: Path = CHECKOUT) -> str:
    """HEAD's commit, with '-dirty' when the work tree has uncommitted changes; 'unknown' outside git.
    SIMREC_GIT_SHA wins: CI and GitOps jobs that build from a commit, not a checkout, set it."""
    if sha := os.environ.get("SIMREC_GIT_SHA"):
        return sha
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
