"""Retrieval quality of `simrec run`s as one table: model vs raw pixels (and the champion, when one was
compared), recall@1/5/10 and mAP@10, on all classes and on the classes held out of training.

  python3 benchmarks/evaluation_table.py RUN_FOLDER [RUN_FOLDER ...]    (reads <run>/evaluate/evaluation)

Run the held-out protocol with, e.g., a separate MLflow store so it registers nothing in the real one:
  SIMREC__STORAGE__MLFLOW_TRACKING_URI=sqlite:////tmp/unseen.db \\
    .envs/control/bin/simrec run --run-name unseen --param exclude_classes=2,4,6 --param gate_mode=dry-run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("recall_at_1", "recall_at_5", "recall_at_10", "map_at_10")


def rows(run: Path) -> list[str]:
    evaluation = json.loads((run / "evaluate" / "evaluation").read_text())
    excluded = ",".join(map(str, evaluation["training"]["exclude_classes"])) or "-"
    lines = []
    for protocol in ("all", "unseen"):
        for scorer, results in evaluation["results"].items():
            if protocol in results:
                values = " | ".join(f"{results[protocol]['metrics'][c]:.4f}" for c in COLUMNS)
                where = "all classes" if protocol == "all" else f"unseen {excluded}"
                lines.append(f"| {run.name} | {excluded} | {where} | {scorer} | {values} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    print("| run | trained without | queries and gallery | scorer | " + " | ".join(COLUMNS) + " |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    for run in args.runs:
        print("\n".join(rows(run)))


if __name__ == "__main__":
    main()
