from pathlib import Path

import pytest
from datagen import write_dataset


@pytest.fixture(scope="session")
def spark():
    from simrec.infra.spark import get_spark

    session = get_spark("simrec-tests")
    yield session
    session.stop()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Four small IDX files and their checksums.json."""
    return write_dataset(tmp_path / "fmnist")


@pytest.fixture(scope="session")
def lineage_file(spark, tmp_path_factory) -> Path:
    """A small catalogue ingested once for the training tests, and its lineage file."""
    from simrec.records import write_record
    from simrec.steps.ingest import ingest

    root = tmp_path_factory.mktemp("train-data")
    source = write_dataset(root / "src", train=600, test=100)
    lineage = ingest(spark, str(source), str(root / "lake"), checksums="none")
    path = root / "lineage.json"
    write_record(path, lineage)
    return path


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """A fresh MLflow store for the test (also for the processes it starts)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SIMREC_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlflow-artifacts"))
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> list[tuple[Path, Path, str]]:
    """Three different models, each (validated pyfunc folder, validation record, model_id), made by the
    serve environment's step; made once for the register and the PostgreSQL registry tests (read only)."""
    import json

    from packages import build_package
    from registry_helpers import run_validate

    from simrec.recommender.package import MANIFEST_FILE

    root = tmp_path_factory.mktemp("register")
    made = []
    for seed in range(3):
        package = build_package(root / f"package-{seed}", count=60, seed=seed)
        result = run_validate(package, root / f"validate-{seed}")
        assert result.returncode == 0, result.stderr[-2000:]
        model_id = json.loads((package / MANIFEST_FILE).read_text())["model_id"]
        made.append((root / f"validate-{seed}" / "model", root / f"validate-{seed}" / "validation", model_id))
    return made
