"""A training process killed after its first epoch resumes from the checkpoint and finishes the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

SIMREC = Path(sys.executable).parent / "simrec"
EPOCHS = 3


def _command(lineage_file: Path, root: Path) -> list[str]:
    return [
        str(SIMREC),
        "train",
        "--lineage",
        str(lineage_file),
        "--architecture",
        "strong",
        "--embedding-dim",
        "16",
        "--batch-size",
        "32",
        "--epochs",
        str(EPOCHS),
        "--learning-rate",
        "0.003",
        "--workers",
        "1",
        "--checkpoint-dir",
        str(root / "ckpt"),
        "--model-out",
        str(root / "model"),
        "--resume",
        "true",
    ]


def _history(root: Path) -> list[dict]:
    path = root / "ckpt" / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_killed_training_resumes_with_a_continuous_curve(lineage_file, tracking, tmp_path) -> None:
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run(_command(lineage_file, reference))

    process = subprocess.Popen(
        _command(lineage_file, interrupted),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not _history(interrupted) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole job: driver, Spark JVM, Horovod rank
    process.wait()
    first_part = _history(interrupted)
    assert len(first_part) == 1, f"expected to kill after epoch 1, history has {len(first_part)} epochs"
    assert not (interrupted / "model").exists()

    _run(_command(lineage_file, interrupted))
    resumed, uninterrupted = _history(interrupted), _history(reference)
    assert [h["epoch"] for h in resumed] == list(range(1, EPOCHS + 1))
    assert resumed[0] == first_part[0]
    losses = [h["train_loss"] for h in resumed]
    expected = [h["train_loss"] for h in uninterrupted]
    assert losses[1] < losses[0], "a restart from scratch would not continue the falling loss"
    for epoch in (1, 2):  # the resumed part tracks the uninterrupted run, not a fresh start
        assert abs(losses[epoch] - expected[epoch]) < 0.25 * expected[epoch], (losses, expected)
    assert abs(resumed[-1]["val_recall_at_1"] - uninterrupted[-1]["val_recall_at_1"]) < 0.15
    assert (interrupted / "model" / "embedding.keras").exists()

    run_id = json.loads((interrupted / "ckpt" / "mlflow_run.json").read_text())["run_id"]
    curve = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    assert sorted({m.step for m in curve}) == [1, 2, 3]  # one MLflow run, continued
