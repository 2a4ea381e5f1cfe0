"""The train step on small generated data: Horovod on the local Spark session, Petastorm input, MLflow."""

import mlflow
import numpy as np
import pytest
import tensorflow as tf

from simrec.data.lineage import read_lineage
from simrec.infra.errors import InputError
from simrec.steps.train import train
from simrec.train.loop import EMBEDDING_MODEL_FILE
from simrec.train.params import TrainParams

SMOKE = TrainParams.component_defaults(
    architecture="seed", embedding_dim=16, batch_size=32, epochs=2, learning_rate=3e-3
)


def test_two_workers_train_and_track(spark, lineage_file, tracking, tmp_path) -> None:
    summary = train(
        spark,
        read_lineage(lineage_file),
        SMOKE,
        tmp_path / "model",
        tmp_path / "ckpt",
        validation_fraction=0.1,
        workers=2,
        git_sha="abc123",
        exclude_classes=(2, 4),
    )
    # 600 generated items, 10 classes in equal shares: classes 2 and 4 (120 items) never reach training.
    assert summary["train_rows"] + summary["validation_rows"] == 480
    history = summary["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["val_recall_at_1"] > 0.5  # 10 distinct patterns; chance is 0.1
    model = tf.keras.models.load_model(tmp_path / "model" / EMBEDDING_MODEL_FILE)
    embeddings = model(np.zeros((3, 28, 28, 1), np.float32)).numpy()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["workers"] == "2" and run.data.params["architecture"] == "seed"
    assert run.data.params["exclude_classes"] == "2,4"
    assert run.data.tags["simrec.git_sha"] == "abc123"
    assert run.data.tags["simrec.delta.train.version"] == "0"
    curve = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in curve] == [1, 2]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "model")]
    assert artifacts == [f"model/{EMBEDDING_MODEL_FILE}"]
    top_level = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert "training_curves.png" in top_level


def test_too_little_data_is_refused(spark, lineage_file, tracking, tmp_path) -> None:
    big_batches = SMOKE.model_copy(update={"batch_size": 4096})
    with pytest.raises(InputError, match="too little data"):
        train(
            spark,
            read_lineage(lineage_file),
            big_batches,
            tmp_path / "m",
            tmp_path / "c",
            validation_fraction=0.1,
        )


def test_bad_lineage_file_is_named(tmp_path) -> None:
    path = tmp_path / "lineage.json"
    for text in ('{"tables": {}}', '{"tables": []}', "[1]", '{"tables": {"train": {"uri": "/x"}}}', "{"):
        path.write_text(text)
        with pytest.raises(InputError, match="not an ingest lineage file"):
            read_lineage(path)


def test_excluded_classes_are_checked() -> None:
    from simrec.data.fashion_mnist import parse_classes

    assert parse_classes("6, 2,4") == (2, 4, 6) and parse_classes("") == ()
    for text, message in (
        ("2;4", "comma-separated"),
        ("12", "class 12 does not exist"),
        ("0,1,2,3,4,5,6,7,8", "too few"),
    ):
        with pytest.raises(InputError, match=message):
            parse_classes(text)
