"""Shared by the register, registry and lineage tests: a package validated in the serve environment
(as the pipeline does it) and evaluate-shaped records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import packages
import pytest

from simrec.infra import paths

LINEAGE = {
    "tables": {
        "train": {"uri": "/lake/train", "version": 4, "rows": 600},
        "test": {"uri": "/lake/test", "version": 2, "rows": 100},
    },
    "sources": {
        "train-images-idx3-ubyte.gz": {"path": "/src/train-images-idx3-ubyte.gz", "sha256": "1" * 64},
        "t10k-labels-idx1-ubyte.gz": {"path": "/src/t10k-labels-idx1-ubyte.gz", "sha256": "2" * 64},
    },
}
TRAIN_PARAMS = {"architecture": "seed", "epochs": 2, "learning_rate": 0.001}
VECTOR_ENGINE = {"uri": "http://milvus.milvus:19530", "alias": "simrec", "collection": "simrec_v3"}


def serve_simrec() -> Path:
    program = paths.envs_dir() / "serve" / "bin" / "simrec"
    if not program.exists():
        pytest.skip(f"no serve environment ({program}); run scripts/setup-envs serve")
    return program


def run_validate(package: Path, outputs: Path) -> subprocess.CompletedProcess:
    serve_simrec()  # skips with a clear reason when the serve environment is missing
    return packages.run_validate(package, outputs)


def training_run(params: dict[str, Any] = TRAIN_PARAMS) -> str:
    """A finished training run in the current store, as train leaves one."""
    import mlflow

    from simrec.registry.tracking import start_run

    with start_run("simrec", run_name="train") as run:
        mlflow.log_params(params)
        mlflow.log_metric("val_recall_at_1", 0.71)
    return run.info.run_id


def evaluation(
    model_id: str,
    run_id: str,
    *,
    mode: str = "enabled",
    blessed: bool = True,
    champion: str | None = None,
    reasons: list[str] | None = None,
    recall: float = 0.8,
) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "metrics": {"recall_at_1": recall, "recall_at_5": 0.95, "map_at_10": 0.6, "pixels_recall_at_1": 0.5},
        "gate": {
            "mode": mode,
            "blessed": blessed,
            "reasons": reasons if reasons is not None else (["better"] if blessed else ["worse"]),
            "champion": {"version": champion, "recall_at_1": 0.7} if champion else None,
        },
        "lineage": LINEAGE,
        "training": {"mlflow_run_id": run_id, "params": TRAIN_PARAMS},
        "embeddings": {"uri": "/lake/embeddings", "version": 1},
        "vector_engine": VECTOR_ENGINE,
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path
