from pathlib import Path

import pytest
from datagen import write_dataset


@pytest.fixture(scope="session")
def spark():
    from simrec.spark import get_spark

    session = get_spark("simrec-tests")
    yield session
    session.stop()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Four small IDX files and their checksums.json."""
    return write_dataset(tmp_path / "fmnist")
