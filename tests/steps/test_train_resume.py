"""A training process killed after its first epoch, or at a crash point anywhere else, resumes from the
checkpoint and finishes the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from train_cli import hyperparameter_flags

from simrec.infra.crash_points import ENV as CRASH_AT

SIMREC = Path(sys.executable).parent / "simrec"
EPOCHS = 3


def _command(lineage_file: Path, root: Path) -> list[str]:
    return [
        str(SIMREC),
        "train",
        "--lineage",
        str(lineage_file),
        *hyperparameter_flags(
            architecture="strong", embedding_dim=16, batch_size=32, epochs=EPOCHS, learning_rate=0.003
        ),
        "--workers",
        "1",
        "--checkpoint-root",
        str(root / "ckpt"),
        "--model-out",
        str(root / "model"),
        "--resume",
        "true",
    ]


def _checkpoints(root: Path) -> Path:
    """The training's checkpoint folder: one per training content, so the killed run and its retry, which
    train the same, share it (a path that does not exist yet before the first checkpoint)."""
    folders = list((root / "ckpt").glob("train-*"))
    assert len(folders) <= 1, folders
    return folders[0] if folders else root / "ckpt" / "not-yet"


def _history(root: Path) -> list[dict]:
    path = _checkpoints(root) / "history.json"
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

    run_id = json.loads((_checkpoints(interrupted) / "mlflow_run.json").read_text())["run_id"]
    curve = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    assert sorted({m.step for m in curve}) == [1, 2, 3]  # one MLflow run, continued


def _short_command(lineage_file: Path, root: Path) -> list[str]:
    """The smallest training that still has an epoch before and after each crash point."""
    command = _command(lineage_file, root)
    for flag, value in (("--architecture", "seed"), ("--epochs", "2"), ("--embedding-dim", "8")):
        command[command.index(flag) + 1] = value
    return command


@pytest.mark.parametrize(
    "crash_at",
    [
        "train:after-checkpoint-1",  # epoch 1 checkpointed, its history.json and MLflow metrics not written
        "train:before-model-save",  # every epoch done, no model yet
    ],
)
def test_training_killed_at_a_crash_point_resumes(lineage_file, tracking, tmp_path, crash_at) -> None:
    command = _short_command(lineage_file, tmp_path)
    crashed = subprocess.run(
        command, env=os.environ | {CRASH_AT: crash_at}, capture_output=True, text=True, timeout=600
    )
    assert crashed.returncode != 0, "the crash point was not reached"
    assert (_checkpoints(tmp_path) / "checkpoint").exists() and not (tmp_path / "model").exists()
    run_id = json.loads((_checkpoints(tmp_path) / "mlflow_run.json").read_text())["run_id"]

    _run(command)
    assert [h["epoch"] for h in _history(tmp_path)] == [1, 2]
    assert (tmp_path / "model" / "embedding.keras").exists()
    summary = json.loads((tmp_path / "model" / "training.json").read_text())
    assert summary["mlflow_run_id"] == run_id and summary["history"] == _history(tmp_path)
    client = mlflow.MlflowClient()
    for metric in ("train_loss", "val_recall_at_1"):
        assert sorted(m.step for m in client.get_metric_history(run_id, metric)) == [1, 2]
    assert client.get_run(run_id).info.status == "FINISHED"
