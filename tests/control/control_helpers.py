"""Helpers for the control-environment tests."""

import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
SIMREC = Path(sys.executable).parent / "simrec"


def simrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The simrec command of this environment, as a user runs it."""
    return subprocess.run(
        [str(SIMREC), *args], cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=900
    )
