"""Where a training keeps its checkpoints: a folder under the checkpoint root named by what it trains.

KFP substitutes no run identity into a task's inputs on every supported backend (2.4.1 never, 2.5+ only
as a whole constant), and a per-run value there would also defeat caching. So the folder is named by the
training's content instead: the data (the lineage's table versions), the effective hyperparameters (tune's
best ones merged in), the ranks and the code version. A retried pod trains the same content and resumes
from the folder; a run with other data, parameters or code gets a folder of its own and starts fresh."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import simrec
from simrec.records import Lineage
from simrec.train.params import TrainParams


def training_folder(
    root: Path,
    *,
    lineage: Lineage,
    params: TrainParams,
    workers: int,
    validation_fraction: float,
    exclude_classes: tuple[int, ...],
    git_sha: str,
) -> Path:
    identity = {
        "lineage": lineage.model_dump(mode="json", exclude_unset=True),  # what ingest wrote
        "params": params.model_dump(mode="json"),
        "workers": workers,
        "validation_fraction": validation_fraction,
        "exclude_classes": sorted(exclude_classes),
        "code": {"simrec": simrec.__version__, "git_sha": git_sha},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return root / f"train-{digest[:20]}"
