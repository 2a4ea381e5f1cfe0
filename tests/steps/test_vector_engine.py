"""The vector-engine backend against a real Milvus protocol server: milvus-lite's (tests/milvus_server.py),
as a Milvus cluster would be reached from a pod."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from milvus_server import free_port, milvus_lite

from simrec.infra.errors import InputError
from simrec.retrieval.engine import VectorEngine, VectorEngineError, collection_name
from simrec.retrieval.exact import top_k
from simrec.retrieval.index import IndexSpec

pytest.importorskip("pymilvus")  # the steps image's client

DIM = 569
ITEMS = 3_000
EXACT = IndexSpec(kind="exact")


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with ten label clusters, as the embedding gives them."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, ITEMS)
    centres = rng.normal(size=(10, DIM))
    vectors = (centres[labels] + rng.normal(scale=1.5, size=(ITEMS, DIM))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_round_trip_create_search_upsert_switch(milvus: str, catalogue) -> None:
    vectors, labels = catalogue
    queries = vectors[:50]
    written = []
    with VectorEngine(milvus) as engine:
        first = engine.create_collection(
            "items", 1, vectors, labels, EXACT, batch_rows=1_000, progress=lambda *p: written.append(p)
        )
        assert first == collection_name("items", 1) == "items_v1"
        assert written == [(1_000, ITEMS), (2_000, ITEMS), (3_000, ITEMS)]
        assert engine.count(first) == ITEMS

        scores, rows = engine.search(first, queries, 10)
        assert rows.shape == scores.shape == (50, 10)
        np.testing.assert_array_equal(rows, top_k(queries, vectors, 10))
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, rows, axis=1), atol=1e-5)

        # HNSW at the package's settings: the same neighbours as exact search on these vectors
        second = engine.create_collection("items", 2, vectors, labels, IndexSpec(kind="hnsw"))
        _, approximate = engine.search(second, queries, 10, IndexSpec(kind="hnsw"))
        assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, rows, strict=True)]) >= 0.95

        switched = engine.switch_alias("items", first)
        assert (switched.serving, switched.previous) == (first, None)
        switched = engine.switch_alias("items", second)
        assert (switched.serving, switched.previous) == (second, first)
        assert engine.alias_target("items_previous") == first

        # a refresh: a new item (a copy of item 0's vector) and a replaced one, seen through the alias
        engine.upsert("items", np.array([ITEMS, 5]), vectors[[0, 1]], labels[[0, 1]])
        assert engine.count(second) == ITEMS + 1
        _, through_alias = engine.search("items", vectors[[0, 1]], 3, IndexSpec(kind="hnsw"))
        assert {0, ITEMS} <= set(through_alias[0][:2])
        assert {1, 5} <= set(through_alias[1][:2])
        assert engine.count(first) == ITEMS  # the previous version is untouched

        back = engine.rollback("items")
        assert (back.serving, back.previous) == (first, second)
        assert engine.drop_old_versions("items") == []  # both are named by an alias
        engine.switch_alias("items", second)
        third = engine.create_collection("items", 3, vectors[:100], labels[:100], EXACT)
        assert engine.drop_old_versions("items", keep=1) == []  # v1 previous, v2 serving, v3 newest
        engine.switch_alias("items", third)
        assert engine.drop_old_versions("items") == [first]
        assert engine.collections() == ["items_v2", "items_v3"]


def test_failed_switch_leaves_the_alias_serving(milvus: str, catalogue) -> None:
    vectors, labels = catalogue
    with VectorEngine(milvus) as engine:
        serving = engine.create_collection("shop", 1, vectors[:500], labels[:500], EXACT)
        engine.switch_alias("shop", serving)
        with pytest.raises(
            VectorEngineError, match="switch alias shop to shop_v9 failed: no such collection"
        ):
            engine.switch_alias("shop", "shop_v9")
        assert engine.alias_target("shop") == serving
        _, rows = engine.search("shop", vectors[:3], 1)
        assert rows[:, 0].tolist() == [0, 1, 2]
        with pytest.raises(InputError, match="shop_v1 already exists"):
            engine.create_collection("shop", 1, vectors[:10])


def test_bad_input_is_refused(milvus: str) -> None:
    with VectorEngine(milvus) as engine:
        with pytest.raises(InputError, match="letters, digits and underscores"):
            engine.create_collection("shop-items", 1, np.ones((2, 4), np.float32))
        with pytest.raises(InputError, match=r"IVF_PQ needs pq_m \(64\) to divide the vector size \(569\)"):
            engine.create_collection("shop", 1, np.ones((2, DIM), np.float32), spec=IndexSpec(kind="ivfpq"))
        with pytest.raises(InputError, match="one of each per item"):
            engine.upsert("shop", np.arange(3), np.ones((2, 4), np.float32))
        with pytest.raises(VectorEngineError, match="search nowhere failed"):
            engine.search("nowhere", np.ones((1, 4), np.float32), 1)


def test_unreachable_engine_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(
        VectorEngineError, match=r"vector engine http://127\.0\.0\.1:\d+: connect failed"
    ) as error:
        VectorEngine(f"http://simrec:secret@127.0.0.1:{free_port()}", timeout=2)
    assert time.monotonic() - started < 15
    assert "secret" not in str(error.value)


def test_an_engine_that_goes_away_is_a_clear_error(tmp_path: Path, catalogue) -> None:
    """Searches after the engine died fail within the timeout with the engine named, not hang (a timeout
    in fractions of a second too: pymilvus bounds its retries by whole seconds only)."""
    vectors, labels = catalogue
    with milvus_lite(tmp_path) as (uri, server), VectorEngine(uri, timeout=2.5) as engine:
        engine.switch_alias("shop", engine.create_collection("shop", 1, vectors[:200], labels[:200], EXACT))
        server.kill()
        server.wait(timeout=30)
        started = time.monotonic()
        with pytest.raises(VectorEngineError, match=f"vector engine {uri}: search shop failed"):
            engine.search("shop", vectors[:1], 5)
        assert time.monotonic() - started < 15


def test_an_engine_without_aliases_says_so(tmp_path: Path, catalogue) -> None:
    """The milvus-lite 2.x that pymilvus brings into the steps image (a local .db file: Milvus's C++ core
    in a subprocess) stores and searches, but has no aliases: the error says so instead of UNIMPLEMENTED."""
    vectors, labels = catalogue
    with VectorEngine(str(tmp_path / "catalogue.db")) as engine:
        collection = engine.create_collection("shop", 1, vectors[:300], labels[:300], EXACT)
        _, rows = engine.search(collection, vectors[:5], 3)
        np.testing.assert_array_equal(rows, top_k(vectors[:5], vectors[:300], 3))
        with pytest.raises(
            VectorEngineError, match=r"list aliases for shop failed: .* \(milvus-lite 2\.x has no aliases\)"
        ):
            engine.switch_alias("shop", collection)


def _last_json(output: str) -> dict:
    """The JSON a command printed after its progress lines."""
    return json.loads(output[output.index("{") :])


def test_the_command_publishes_a_package_and_moves_the_alias(milvus: str, tmp_path: Path, capsys) -> None:
    from packages import build_package

    from simrec.recommender.package import Recommender
    from simrec.retrieval.engine_cli import main

    package = build_package(tmp_path / "package", count=200)
    recommender = Recommender(package)
    vectors = recommender.index.vectors(list(range(recommender.index.ntotal)))

    main(["publish", "--package", str(package), "--uri", milvus, "--name", "catalogue"])
    published = _last_json(capsys.readouterr().out)
    assert published["collection"] == "catalogue_v1" and published["items"] == 200
    assert published["index"] == {"kind": "hnsw", "m": 32, "ef_construction": 200, "ef_search": 64}
    main(["switch", "--collection", "catalogue_v1", "--uri", milvus, "--name", "catalogue"])
    assert _last_json(capsys.readouterr().out) == {
        "alias": "catalogue",
        "serving": "catalogue_v1",
        "previous": None,
    }

    with VectorEngine(milvus) as engine:  # the package's HNSW settings on 200 items: exact answers
        scores, rows = engine.search("catalogue", vectors[:20], 5)
    np.testing.assert_array_equal(rows, top_k(vectors[:20], vectors, 5))
    np.testing.assert_allclose(scores, np.take_along_axis(vectors[:20] @ vectors.T, rows, axis=1), atol=1e-5)

    main(["publish", "--package", str(package), "--uri", milvus, "--name", "catalogue"])
    assert _last_json(capsys.readouterr().out)["collection"] == "catalogue_v2"
    main(["prune", "--uri", milvus, "--name", "catalogue"])
    assert _last_json(capsys.readouterr().out) == {"dropped": ["catalogue_v2"]}  # named by no alias
    with pytest.raises(SystemExit, match=r"rollback: error: .*catalogue has no previous collection"):
        main(["rollback", "--uri", milvus, "--name", "catalogue"])
