"""Test-only crash points: recovery tests need a real process to die at an exact place (between two
commits, after a checkpoint but before its history), which a timed kill cannot hit reliably.

Setting SIMREC_TEST_CRASH_AT=<name> makes the process SIGKILL itself (no cleanup, no atexit, like an
OOM kill or a lost node) when it reaches crash_point(<name>). Unset, a crash point does nothing."""

from __future__ import annotations

import os
import signal

ENV = "SIMREC_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
