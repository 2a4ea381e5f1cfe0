"""The evaluate step on small generated data: Spark batch embedding into Delta, metrics against an
independent computation, the recommender package, the report, the gate."""

import json

import numpy as np
import pytest
from deltalake import DeltaTable
from packages import embedding_model_file

from simrec.data.codec import decode_png
from simrec.data.lineage import read_lineage
from simrec.evaluate.gate import GateSettings, decide
from simrec.infra.errors import InputError
from simrec.recommender.package import Recommender
from simrec.records import GateChampion
from simrec.retrieval.exact import recall_at_k, top_k
from simrec.retrieval.index import IndexSpec, build_index, load_index, save_index
from simrec.steps.evaluate import evaluate


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    embedding_model_file(folder, seed=1)
    (folder / "training.json").write_text(json.dumps({"mlflow_run_id": "run-x", "params": {"epochs": 1}}))
    return folder


def _pixels_and_labels(uri: str) -> tuple[np.ndarray, np.ndarray]:
    frame = DeltaTable(uri).to_pandas().sort_values("item_id")
    pixels = np.stack([decode_png(png) for png in frame["image"]]).reshape(len(frame), -1).astype(np.float32)
    return pixels / np.linalg.norm(pixels, axis=1, keepdims=True), frame["label"].to_numpy()


def test_evaluate_measures_packages_and_reports(spark, lineage_file, model_dir, tracking, tmp_path) -> None:
    lineage = read_lineage(lineage_file)
    lake = str(tmp_path / "lake")
    gate = GateSettings("enabled", min_recall_at_1=0.0)
    record, page = evaluate(
        spark, lineage, model_dir, lake, tmp_path / "package", gate=gate, exclude_classes=(2, 4)
    )
    evaluation = record.model_dump(mode="json")  # as the step writes it
    metrics = evaluation["metrics"]
    for name in ("recall_at_1", "recall_at_5", "recall_at_10", "precision_at_10", "map_at_10"):
        for prefix in ("", "pixels_", "unseen_", "pixels_unseen_"):
            assert 0.0 <= metrics[prefix + name] <= 1.0, prefix + name
    assert "champion_recall_at_1" not in metrics  # nothing registered yet

    # Raw-pixel recall@1 recomputed from the Delta files by an independent reader (delta-rs).
    train_pixels, train_labels = _pixels_and_labels(lineage.tables.train.uri)
    test_pixels, test_labels = _pixels_and_labels(lineage.tables.test.uri)
    expected = recall_at_k(top_k(test_pixels, train_pixels, 1), test_labels, train_labels, 1)
    assert metrics["pixels_recall_at_1"] == pytest.approx(expected)
    unseen_train, unseen_test = np.isin(train_labels, (2, 4)), np.isin(test_labels, (2, 4))
    neighbours = top_k(test_pixels[unseen_test], train_pixels[unseen_train], 1)
    expected = recall_at_k(neighbours, test_labels[unseen_test], train_labels[unseen_train], 1)
    assert metrics["pixels_unseen_recall_at_1"] == pytest.approx(expected)

    # Every catalogue item embedded once, by Spark, into the embeddings table; the package indexes all.
    embeddings = spark.read.format("delta").load(evaluation["embeddings"]["uri"]).toPandas()
    assert len(embeddings) == 700 and set(embeddings["model_id"]) == {evaluation["model_id"]}
    recommender = Recommender(tmp_path / "package")
    assert len(recommender.items) == 700 and recommender.check_smoke_queries() == []
    assert metrics["ann_recall_loss_at_10"] <= 0.01
    assert evaluation["gate"]["blessed"] is True and evaluation["gate"]["champion"] is None
    for picture in ("similar items", "embedding map", "metrics"):
        assert f"<h2>{picture}</h2>" in page
    assert page.count("data:image/png;base64,") >= 4
    assert evaluation["segments"]["points"] == 100

    # Same model, same data: no embedding is computed again and the table keeps its version.
    again, _ = evaluate(spark, lineage, model_dir, lake, tmp_path / "package2", gate=gate)
    assert again.embeddings.version == evaluation["embeddings"]["version"]
    assert again.metrics["recall_at_1"] == pytest.approx(metrics["recall_at_1"])


def test_gate_refuses_worse_and_accepts_better() -> None:
    gate = GateSettings("enabled", min_recall_at_1=0.8, max_regression=0.01)
    champion = GateChampion(version="3", recall_at_1=0.9)
    assert decide(gate, 0.95, champion).blessed is True
    assert decide(gate, 0.895, champion).blessed is True  # within the allowed regression
    worse = decide(gate, 0.85, champion)
    assert worse.blessed is False and "champion v3" in worse.reasons[1]
    below = decide(gate, 0.7, None)
    assert below.blessed is False and "no champion" in below.reasons[1]
    assert decide(gate, 0.81, None).blessed is True
    assert decide(GateSettings("disabled", 0.99), 0.1, champion).blessed is True
    dry = decide(GateSettings("dry-run", 0.8), 0.7, None)
    assert dry.blessed is False and dry.mode == "dry-run"
    # the record register reads: settings, decision, reasons and the champion, by their JSON names
    assert dry.model_dump(mode="json") == {
        "mode": "dry-run", "min_recall_at_1": 0.8, "max_regression": 0.0, "blessed": False,
        "reasons": dry.reasons, "champion": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (("sometimes", 0.5, 0.0), "gate mode"),
        (("enabled", 1.5, 0.0), "minimum"),
        (("enabled", 0.5, -1), "regr"),
    ],
)
def test_bad_gate_settings_are_refused(settings, message) -> None:
    with pytest.raises(InputError, match=message):
        GateSettings(*settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"m": 1}, "index m must be at least 2"),
        ({"ef_search": 0}, "ef_search"),
        ({"ef_construction": -1}, "ef_c"),
    ],
)
def test_bad_index_settings_are_refused(settings, message) -> None:
    with pytest.raises(InputError, match=message):
        IndexSpec(**settings)


def test_a_package_index_with_a_bad_ef_search_is_refused(tmp_path) -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    save_index(
        build_index(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)), tmp_path / "index.faiss"
    )
    assert load_index(tmp_path / "index.faiss", ef_search=16).hnsw.efSearch == 16
    with pytest.raises(InputError, match="ef_search must be at least 1, got 0"):
        load_index(tmp_path / "index.faiss", ef_search=0)


def test_the_champion_is_scored_in_the_same_step_and_gates(spark, lineage_file, tracking, tmp_path) -> None:
    from registry_helpers import run_validate, training_run

    from simrec.records import write_record
    from simrec.steps.register import read_evaluation, read_validation, register

    lineage = read_lineage(lineage_file)
    lake = str(tmp_path / "lake")
    models = []
    for seed in (1, 2):
        folder = tmp_path / f"model-{seed}"
        embedding_model_file(folder, seed=seed)
        summary = {"mlflow_run_id": training_run(), "params": {"seed": seed}}
        (folder / "training.json").write_text(json.dumps(summary))
        models.append(folder)
    gate = GateSettings("enabled", min_recall_at_1=0.0, max_regression=0.0)
    first, _ = evaluate(spark, lineage, models[0], lake, tmp_path / "package-1", gate=gate)
    validated = run_validate(tmp_path / "package-1", tmp_path / "validate-1")
    assert validated.returncode == 0, validated.stderr[-2000:]
    write_record(tmp_path / "evaluation-1.json", first)
    register(
        tmp_path / "validate-1" / "model",
        read_evaluation(tmp_path / "evaluation-1.json"),
        read_validation(tmp_path / "validate-1" / "validation"),
    )

    second, page = evaluate(spark, lineage, models[1], lake, tmp_path / "package-2", gate=gate)
    champion = second.gate.champion
    assert champion.version == "1" and champion.model_id == first.model_id
    # The champion re-measured on the same test set gives the same numbers as its own evaluation.
    assert second.metrics["champion_recall_at_1"] == pytest.approx(first.metrics["recall_at_1"])
    assert second.metrics["champion_map_at_10"] == pytest.approx(first.metrics["map_at_10"])
    better = second.metrics["recall_at_1"] >= first.metrics["recall_at_1"]
    assert second.gate.blessed is better
    assert "champion" in page
    # The champion's vectors were already in the embeddings table: only the new model's were added.
    embeddings = spark.read.format("delta").load(second.embeddings.uri).toPandas()
    assert embeddings.groupby("model_id").size().to_dict() == {
        first.model_id: 700,
        second.model_id: 700,
    }


def test_a_folder_without_a_model_is_refused_by_name(spark, lineage_file, tmp_path) -> None:
    with pytest.raises(InputError, match="not a trained model folder"):
        evaluate(
            spark,
            read_lineage(lineage_file),
            tmp_path,
            str(tmp_path / "lake"),
            tmp_path / "p",
            gate=GateSettings(),
        )
    assert not (tmp_path / "p").exists() and not (tmp_path / "lake").exists()  # nothing written
