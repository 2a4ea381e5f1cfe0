"""Progress and result lines a step wants its user to see: `simrec run` shows these (and hides the rest of
a step's output, which stays in <task>/log.txt). One marker, so any runner can recognise them."""

from __future__ import annotations

import re
import sys

MARKER = "simrec> "
# Lines printed by code that does not call report() (yet): the training loop's per-epoch line, in train
# and in each tuning trial (Horovod prefixes each rank's output with "[rank]<stdout>:").
_FOREIGN = (re.compile(r"^(?:\[\d+\]<stdout>:)?(epoch \d+/\d+: .*)$"),)


def report(text: str) -> None:
    """Prints one progress or result line, marked, and flushed at once (steps' stdout is a pipe)."""
    print(f"{MARKER}{text}", file=sys.stdout, flush=True)


def progress_text(line: str) -> str | None:
    """The text to show for a line of step output, or None when it is not a progress line."""
    line = line.rstrip("\n")
    if line.startswith(MARKER):
        return line[len(MARKER) :]
    for pattern in _FOREIGN:
        if match := pattern.match(line):
            return match.group(1)
    return None
