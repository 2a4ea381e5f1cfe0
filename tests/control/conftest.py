import os
from pathlib import Path

import pytest
from datagen import write_dataset


@pytest.fixture
def smoke_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for a smoke-profile run on generated data, with every store under tmp_path."""
    source = write_dataset(tmp_path / "fmnist")
    overrides = {
        "SIMREC__INGEST__SOURCE": str(source),
        "SIMREC__STORAGE__LAKE_URI": str(tmp_path / "lake"),
        "SIMREC__STORAGE__RUNS_DIR": str(tmp_path / "runs"),
        "SIMREC__STORAGE__CHECKPOINT_ROOT": str(tmp_path / "checkpoints"),
        "SIMREC__STORAGE__MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SIMREC__STORAGE__MLFLOW_ARTIFACT_ROOT": str(tmp_path / "mlflow-artifacts"),
    }
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)
