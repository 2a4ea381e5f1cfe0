"""Engine-backed packages served (retrieval.engine_index): their vectors published to a real Milvus
protocol server (milvus-lite's, tests/milvus_server.py) and the manifest's `vector_engine` key written, as
evaluate does, then served by a real `simrec serve`: the same answers as in process, live additions
upserted, deploy and rollback moving the alias, and an engine that fails refusing cleanly while the
serving version keeps answering."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ADMIN_TOKEN, TOKEN
from milvus_server import free_port, start_milvus_lite, stop
from pymilvus import MilvusClient
from serve_helpers import b64, start_server

from simrec.recommender.package import MANIFEST_FILE, PackageError, Recommender
from simrec.retrieval.engine import VectorEngine
from simrec.retrieval.engine_cli import publish
from simrec.retrieval.engine_index import EngineIndex

ALIAS = "catalogue"


def engine_backed(package: Path, folder: Path, uri: str, alias: str = ALIAS) -> Path:
    """A copy of `package` whose vectors are the next version of `alias`'s collection on `uri`."""
    copy = shutil.copytree(package, folder)
    with VectorEngine(uri) as engine:
        published = publish(engine, alias, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["vector_engine"] = {"uri": uri, "alias": alias, "collection": published["collection"]}
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    return copy


@pytest.fixture(scope="module")
def engine_packages(packages, milvus, tmp_path_factory) -> dict[str, Path]:
    """v1 and v2 published as catalogue_v1 and catalogue_v2, and a copy of v1 naming a collection that
    is not there."""
    root = tmp_path_factory.mktemp("engine-packages")
    v1 = engine_backed(packages["v1"], root / "v1", milvus)
    v2 = engine_backed(packages["v2"], root / "v2", milvus)
    missing = shutil.copytree(v1, root / "missing")
    manifest = json.loads((missing / MANIFEST_FILE).read_text())
    manifest["vector_engine"]["collection"] = "catalogue_v9"
    (missing / MANIFEST_FILE).write_text(json.dumps(manifest))
    return {"v1": v1, "v2": v2, "missing": missing}


@pytest.fixture
def engine_server(engine_packages, tmp_path):
    running = start_server(
        tmp_path,
        TOKEN,
        "--package",
        str(engine_packages["v1"]),
        "--package-root",
        str(engine_packages["v1"].parent),
        admin_token=ADMIN_TOKEN,
    )
    yield running
    running.stop()


def test_the_engine_index_answers_as_the_package_index(packages, engine_packages) -> None:
    """Loaded in process: exact-search answers as the faiss index gives them, smoke queries as recorded;
    growing upserts, and the older index object never returns the rows it has no item for."""
    from packages import catalogue_items

    in_process, engine = Recommender(packages["v1"]), Recommender(engine_packages["v1"])
    assert isinstance(engine.index, EngineIndex) and engine.index.collection == "catalogue_v1"
    assert engine.check_smoke_queries() == []
    rows = [0, 7, 299]
    np.testing.assert_allclose(engine.index.vectors(rows), in_process.index.vectors(rows), atol=1e-6)
    for item in ["item-00000", "item-00042", "item-00299"]:
        assert engine.smoke_answers(item) == in_process.smoke_answers(item)

    new = catalogue_items(3, seed=5, prefix="live")
    grown = engine.with_items(new)
    assert (engine.index.ntotal, grown.index.ntotal) == (300, 303)
    (answer,) = grown.similar_to_pixels(new["pixels"].iloc[0][None], 1)
    assert answer[0].item_id == "live-00000"
    _, old_rows = engine.index.search(grown.index.vectors([300, 301, 302]), 10)
    assert old_rows.max() < 300


def test_a_package_its_engine_does_not_hold_is_refused(engine_packages, milvus, tmp_path) -> None:
    with pytest.raises(PackageError, match=f"vector engine {milvus} has no collection catalogue_v9"):
        Recommender(engine_packages["missing"])
    with VectorEngine(milvus) as engine:
        engine.create_collection("short", 1, np.ones((5, 16), np.float32))
    short = shutil.copytree(engine_packages["v1"], tmp_path / "short")
    manifest = json.loads((short / MANIFEST_FILE).read_text())
    manifest["vector_engine"]["collection"] = "short_v1"
    (short / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="short_v1 holds 5 of the package's 300 rows"):
        Recommender(short)


def test_served_from_the_engine_it_answers_as_in_process(engine_server, packages) -> None:
    server = engine_server
    status = server.get("/admin/status").json()["current"]
    assert status["vector_engine"]["collection"] == "catalogue_v1"
    in_process = Recommender(packages["v1"])
    for item in ["item-00000", "item-00013", "item-00150", "item-00299"]:
        expected = in_process.smoke_answers(item)
        assert server.similar(item_id=item, k=5) == expected["by_item"]
        image = b64(in_process.image(item))
        assert server.similar(image=image, k=5) == expected["by_image"]


def test_items_added_live_are_upserted_and_found(engine_server, milvus) -> None:
    from packages import catalogue_items

    server = engine_server
    new = catalogue_items(4, seed=9, prefix="live")
    items = [
        {"item_id": i, "label": int(label), "label_name": name, "image": b64(png)}
        for i, label, name, png in new[["item_id", "label", "label_name", "image"]].itertuples(index=False)
    ]
    added = server.post("/admin/items", json={"items": items})
    assert added.json() == {"added": 4, "skipped": 0, "index_version": 2, "catalogue_size": 304}
    with VectorEngine(milvus) as engine:
        assert engine.count("catalogue_v1") == 304
    assert server.similar(image=items[2]["image"], k=1) == ["live-00002"]
    assert server.similar(item_id="live-00002", k=3)[0] != "live-00002"  # itself is not its neighbour


def test_deploy_and_rollback_move_the_alias(engine_server, engine_packages, milvus) -> None:
    server = engine_server
    with VectorEngine(milvus) as engine:
        assert engine.alias_target(ALIAS) == "catalogue_v1"  # serving the first package pointed it

        deployed = server.post("/admin/deploy", json={"package": "v2", "version": "2"})
        assert deployed.status_code == 200 and deployed.json()["outcome"] == "serving", deployed.text
        assert (engine.alias_target(ALIAS), engine.alias_target(f"{ALIAS}_previous")) == (
            "catalogue_v2",
            "catalogue_v1",
        )
        assert (
            server.similar(item_id="item-00001", k=5)
            == Recommender(engine_packages["v2"]).smoke_answers("item-00001")["by_item"]
        )

        assert server.post("/admin/rollback").json()["serving"]["version"] == "1"
        assert engine.alias_target(ALIAS) == "catalogue_v1"

        refused = server.post("/admin/deploy", json={"package": "missing", "version": "9"})
        assert refused.status_code == 400, refused.text
        assert engine.alias_target(ALIAS) == "catalogue_v1"
    assert server.get("/admin/status").json()["current"]["version"] == "1"
    assert len(server.similar(item_id="item-00001", k=5)) == 5
    assert "has no collection catalogue_v9" in server.log.read_text()


def test_an_engine_that_stops_gives_503_and_serving_resumes(packages, tmp_path) -> None:
    """The engine stopped mid-serving: queries are a 503 naming it, refreshes and deploys are refused
    with the serving version unchanged, the server stays up; the engine back, it answers again. The
    manifest records an engine that is not there: --vector-engine-uri says where this server reaches it."""
    from packages import catalogue_items

    port = free_port()
    uri, engine = start_milvus_lite(tmp_path, port)
    server = None
    try:
        package = engine_backed(packages["v1"], tmp_path / "v1", uri, alias="stops")
        manifest = json.loads((package / MANIFEST_FILE).read_text())
        manifest["vector_engine"]["uri"] = f"http://127.0.0.1:{free_port()}"
        (package / MANIFEST_FILE).write_text(json.dumps(manifest))
        server = start_server(
            tmp_path,
            TOKEN,
            "--package",
            str(package),
            "--vector-engine-uri",
            uri,
            "--package-root",
            str(tmp_path),
            admin_token=ADMIN_TOKEN,
        )
        before = server.similar(item_id="item-00005", k=5)

        stop(engine)
        started = time.monotonic()
        response = server.post("/similar", json={"item_id": "item-00005", "k": 5})
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < 15  # the engine calls' timeout (5 s), not pymilvus's retries
        assert response.json()["error"].startswith(f"vector engine {uri}: ")
        by_image = server.post("/similar", json={"image": b64(catalogue_items(1)["image"][0]), "k": 5})
        assert by_image.status_code == 503 and "vector engine" in by_image.json()["error"]
        new = catalogue_items(1, seed=3, prefix="late").iloc[0]
        item = {"item_id": new.item_id, "label": 1, "label_name": "x", "image": b64(new.image)}
        refused = server.post("/admin/items", json={"items": [item]})
        assert refused.status_code == 503 and "adding items refused" in refused.json()["error"]
        assert server.get("/v2/health/live").status_code == 200
        assert server.get("/admin/status").json()["current"]["items"] == 300
        assert "Traceback" not in server.log.read_text()

        uri_again, engine = start_milvus_lite(tmp_path, port)
        assert uri_again == uri
        # milvus-lite forgets which collections were loaded when it restarts (a Milvus cluster keeps
        # that in its metadata store and loads them again itself)
        MilvusClient(uri).load_collection("stops_v1")
        assert server.similar(item_id="item-00005", k=5) == before
    finally:
        if server:
            server.stop()
        stop(engine)
