"""Evaluate with a vector engine: the catalogue's exact vectors published as the alias's next versioned
collection (every row, searched as exact search answers), recorded in the package manifest, the
evaluation record and the evaluate run; a failing engine stops evaluate before any package file exists.
Against milvus-lite's server (tests/milvus_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from milvus_server import free_port
from packages import catalogue_items, embedding_model_file

from simrec.data.lineage import read_lineage
from simrec.evaluate.gate import GateSettings
from simrec.evaluate.measure import Catalogue
from simrec.evaluate.packaging import EngineTarget, package_candidate
from simrec.infra.errors import InputError
from simrec.recommender.package import MANIFEST_FILE, read_manifest
from simrec.retrieval.engine import VectorEngine, VectorEngineError
from simrec.retrieval.exact import top_k
from simrec.retrieval.index import IndexSpec

MilvusClient = pytest.importorskip("pymilvus").MilvusClient  # the steps image's client

ITEMS = 200
HNSW = IndexSpec(kind="hnsw")


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Catalogue, np.ndarray]:
    """(model file, catalogue of ITEMS items, a fifth of them test, with one unlabelled, its vectors)."""
    from simrec.embedding.keras_model import EmbeddingModel

    model_file = embedding_model_file(tmp_path_factory.mktemp("model"), seed=3)
    items = catalogue_items(ITEMS, seed=3)
    pixels = np.stack(items.pop("pixels").to_list())
    items["label"] = items["label"].astype("Int32")
    items.loc[7, "label"] = None  # an unlabelled item: the engine stores it as label -1
    items["table"] = np.where(np.arange(ITEMS) % 5 == 0, "test", "train")
    return model_file, Catalogue(items, pixels), EmbeddingModel(model_file).embed_pixels(pixels)


def test_the_package_vectors_are_published_and_recorded(milvus: str, candidate, tmp_path: Path) -> None:
    model_file, catalogue, vectors = candidate
    target = EngineTarget(milvus, "shop")
    packaged = package_candidate(tmp_path / "p1", model_file, catalogue, vectors, HNSW, {}, target)

    record = {"uri": milvus, "alias": "shop", "collection": "shop_v1"}
    assert packaged.vector_engine == record
    assert read_manifest(tmp_path / "p1")["vector_engine"] == record
    with VectorEngine(milvus) as engine:
        assert engine.count("shop_v1") == ITEMS
        queries = vectors[[0, 7, 42, 199]]
        _, rows = engine.search("shop_v1", queries, 5, HNSW)  # the package's settings
        np.testing.assert_array_equal(rows, top_k(queries, vectors, 5))
        stored = MilvusClient(uri=milvus).query("shop_v1", filter="row in [6, 7]", output_fields=["label"])
        assert {hit["row"]: hit["label"] for hit in stored} == {6: 6, 7: -1}  # -1: unlabelled

        # the next evaluate publishes the next version; the first is left as it was
        again = package_candidate(tmp_path / "p2", model_file, catalogue, vectors, HNSW, {}, target)
        assert again.vector_engine["collection"] == "shop_v2"
        assert engine.versions("shop") == [(1, "shop_v1"), (2, "shop_v2")]


def test_closing_one_engine_leaves_another_on_the_same_uri_working(milvus: str) -> None:
    """pymilvus shares a connection per URI unless told otherwise: a closed engine must not cut another
    (a server closing the version it replaced while the new one serves)."""
    with VectorEngine(milvus) as serving:
        VectorEngine(milvus).close()
        assert serving.collections() is not None


def test_an_unreachable_engine_stops_evaluate_before_the_package(candidate, tmp_path: Path) -> None:
    model_file, catalogue, vectors = candidate
    target = EngineTarget(f"http://simrec:secret@127.0.0.1:{free_port()}", "shop", timeout=2)
    with pytest.raises(
        VectorEngineError, match=r"^vector engine http://127\.0\.0\.1:\d+: connect failed"
    ) as error:
        package_candidate(tmp_path / "package", model_file, catalogue, vectors, HNSW, {}, target)
    assert "secret" not in str(error.value)
    assert not (tmp_path / "package" / MANIFEST_FILE).exists()


@pytest.mark.parametrize(
    ("uri", "alias", "message"),
    [
        ("", "shop", "vector engine URI is empty"),
        ("http://milvus:19530", "shop-items", "'shop-items': use letters, digits and underscores"),
        ("http://milvus:19530", "1shop", "not starting with a digit"),
    ],
)
def test_bad_engine_settings_are_refused(uri: str, alias: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        EngineTarget(uri, alias)


def test_the_step_refuses_a_bad_alias_before_any_work(tmp_path: Path) -> None:
    from simrec.steps.evaluate import main

    with pytest.raises(InputError, match="'shop-items': use letters"):
        main(_step_argv(tmp_path, alias="shop-items"))
    assert list(tmp_path.iterdir()) == []


def _step_argv(folder: Path, alias: str = "shop") -> list[str]:
    argv = ["--lineage", "{}", "--model", str(folder), "--lake-uri", str(folder)]
    argv += ["--vector-engine-uri", "http://milvus:19530", "--vector-engine-alias", alias]
    for output in ("package", "evaluation", "metrics", "report", "blessed"):
        argv.append(f"--{output}-out={folder / output}")
    return argv


def test_the_step_takes_the_token_from_the_environment_and_fails_in_one_line(
    tmp_path: Path, monkeypatch
) -> None:
    """`simrec evaluate` hands the engine (token from $SIMREC_VECTOR_ENGINE_TOKEN, never a flag) to
    evaluate, and an engine failure ends the step with one line naming the engine, writing no output."""
    from simrec.infra import spark
    from simrec.steps import evaluate as step

    given = []

    def failing_evaluate(*_, engine: EngineTarget, **__):
        given.append(engine)
        raise VectorEngineError("vector engine http://milvus:19530: connect failed: unavailable")

    monkeypatch.setattr(step, "evaluate", failing_evaluate)
    monkeypatch.setattr(step, "read_lineage", lambda _: None)
    monkeypatch.setattr(spark, "get_spark", lambda _: None)
    monkeypatch.setenv("SIMREC_VECTOR_ENGINE_TOKEN", "root:Milvus")
    with pytest.raises(
        SystemExit, match=r"^simrec evaluate: error: vector engine http://milvus:19530: connect"
    ):
        step.main(_step_argv(tmp_path))
    assert given == [EngineTarget("http://milvus:19530", "shop", "root:Milvus")]
    assert "Milvus" not in repr(given[0])  # the token stays out of logs
    assert list(tmp_path.iterdir()) == []


def test_evaluate_records_the_collection(spark, lineage_file, milvus: str, tracking, tmp_path: Path) -> None:
    """The whole evaluate step's library call: the record and the evaluate run name the collection."""
    from simrec.steps.evaluate import evaluate

    model_dir = tmp_path / "model"
    embedding_model_file(model_dir, seed=1)
    (model_dir / "training.json").write_text(json.dumps({"mlflow_run_id": "run-x", "params": {}}))
    record, _ = evaluate(
        spark,
        read_lineage(lineage_file),
        model_dir,
        str(tmp_path / "lake"),
        tmp_path / "package",
        gate=GateSettings("enabled"),
        engine=EngineTarget(milvus, "catalogue"),
    )
    published = {"uri": milvus, "alias": "catalogue", "collection": "catalogue_v1"}
    assert record.vector_engine == published
    assert record.model_dump(mode="json")["vector_engine"] == published  # what register reads
    assert read_manifest(tmp_path / "package")["vector_engine"] == published
    tags = mlflow.get_run(record.mlflow_run_id).data.tags
    assert tags["simrec.vector_engine.collection"] == "catalogue_v1"
    with VectorEngine(milvus) as engine:
        assert engine.count("catalogue_v1") == read_manifest(tmp_path / "package")["items"]
