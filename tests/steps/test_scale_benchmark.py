"""benchmarks/scale.py's smallest path end to end (issue #25): a generated catalogue grown by transformations,
ingested, embedded by Spark, indexed, packaged, served, load-tested and refreshed live, then the table and
the plot. The figures themselves are the benchmark's business; here: it runs and reports every cost."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datagen import write_dataset
from packages import build_package

from simrec.infra import paths

BENCHMARK = paths.CHECKOUT / "benchmarks" / "scale.py"


def test_transformations_keep_shape_and_never_copy():
    sys.path.insert(0, str(BENCHMARK.parent))
    from scale import grown

    pixels = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    labels = np.arange(50, dtype=np.uint8) % 10
    images, grown_labels = grown(pixels, labels, 180, seed=0)
    assert images.shape == (180, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[:50], pixels)  # the originals first, unchanged
    np.testing.assert_array_equal(grown_labels, labels[np.arange(180) % 50])
    assert all((images[i] != pixels[i % 50]).any() for i in range(50, 180))


def test_quick_run_end_to_end(tmp_path: Path):
    if not (paths.envs_dir() / "serve" / "bin" / "python").exists():
        pytest.skip("no serve environment; run scripts/setup-envs serve")
    source = write_dataset(tmp_path / "fmnist", train=300, test=100)
    package = build_package(tmp_path / "package", count=30)
    workdir = tmp_path / "bench"
    command = [sys.executable, str(BENCHMARK), "--quick", "--sizes", "1000", "--source", str(source)]
    command += ["--package", str(package), "--workdir", str(workdir), "--refresh-items", "100"]
    command += ["--embed-sample", "400"]  # local[1] embeds a sample, local[2] the whole catalogue
    python_path = os.pathsep.join([str(paths.CHECKOUT / "src"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((workdir / "scale.json").read_text())
    [row] = results["pipeline"]
    assert (
        row["items"] == 1000
        and row["served_kind"] == "hnsw"
        and row["refresh_s"] > 0
        and row["p99_ms"] >= row["p50_ms"] > 0
        and row["item_p99_ms"] >= row["item_p50_ms"] > 0
    )
    assert row["embed_1_items_per_s"] > 0 and row["embed_2_items_per_s"] > 0
    assert 300 < row["embed_1_items"] < 500 and row["embed_2_items"] == 1000
    [index] = results["indexes"]
    assert index["kind"] == "hnsw" and 0 <= index["overlap_at_10"] <= 1
    assert "| items | served_kind | ingest_s |" in done.stdout
    assert (workdir / "scale.png").stat().st_size > 0
    assert not (workdir / "1000").exists()  # each size's lake and package removed without --keep


def test_an_empty_embedding_sample_is_refused():
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--no-run", "--embed-sample", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--embed-sample must be at least 1, got 0" in done.stderr
