"""Unlabelled catalogue items downstream of ingest: training reads only labelled rows, evaluation measures
with labelled rows only, and the catalogue (the package's items and index, the live refresh) keeps every
item with its null label. Real Spark + Delta on a small generated lake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datagen import write_dataset
from packages import embedding_model_file
from serve_helpers import b64, server_env, start_server

from simrec.data.codec import decode_png
from simrec.data.fashion_mnist import LABEL_NAMES
from simrec.data.idx import write_idx
from simrec.data.lake_reader import read_items
from simrec.embedding.embedder import pixel_vectors
from simrec.embedding.keras_model import EmbeddingModel
from simrec.evaluate.measure import Catalogue, catalogue_frame, measure
from simrec.infra import paths
from simrec.recommender.package import Recommender, write_package
from simrec.records import Lineage
from simrec.serving.admin_client import new_item
from simrec.serving.schemas import NewItem
from simrec.steps.ingest import ingest
from simrec.train.data import read_table

UNLABELLED_TRAIN = ["new-000000", "new-000001", "new-000002"]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> tuple[Path, Lineage]:
    """120 + 20 labelled items, and unlabelled batches: three in train, two in test."""
    root = tmp_path_factory.mktemp("unlabelled")
    source = write_dataset(root / "src", train=120, test=20)
    rng = np.random.default_rng(3)
    lake_uri = str(root / "lake")
    for name, count, table in (("new", 3, "train"), ("extra", 2, "test")):
        (root / name).mkdir()
        pixels = rng.integers(0, 256, (count, 28, 28), np.uint8)
        write_idx(root / name / f"{name}-images-idx3-ubyte.gz", pixels)  # no labels file: unlabelled
        lineage = ingest(spark, str(source), lake_uri, checksums="none", batch=root / name, batch_table=table)
    return root / "lake", lineage  # after the last batch


def test_training_reads_only_labelled_rows(spark, lake) -> None:
    _, lineage = lake
    assert lineage.tables.train.rows == 123
    rows = read_table(spark, lineage.tables.train).toPandas()
    assert len(rows) == 120 and not set(UNLABELLED_TRAIN) & set(rows["item_id"])
    assert rows["label"].notna().all()


def test_evaluation_measures_labelled_rows_and_packages_every_item(spark, lake, tmp_path) -> None:
    _, lineage = lake
    catalogue = Catalogue.collect(catalogue_frame(spark, lineage))
    assert len(catalogue.items) == 145
    assert len(catalogue.where("train")) == 120 and len(catalogue.where("test")) == 20
    unlabelled = catalogue.items["label"].isna().to_numpy()
    assert unlabelled.sum() == 5 and (catalogue.labels[unlabelled] == -1).all()
    results = measure(pixel_vectors(catalogue.pixels), catalogue, (2, 4))
    assert set(results["all"]["per_class_recall_at_1"]) <= set(range(10))  # no query without a label
    assert set(results["unseen"]["per_class_recall_at_1"]) <= {2, 4}

    model_file = embedding_model_file(tmp_path / "model")
    vectors = EmbeddingModel(model_file).embed_pixels(catalogue.pixels)
    recommender = Recommender(write_package(tmp_path / "package", model_file, catalogue.items, vectors))
    assert len(recommender.items) == 145 and recommender.index.ntotal == 145
    own = catalogue.items.index[catalogue.items["item_id"] == UNLABELLED_TRAIN[0]][0]
    found = recommender.similar_to_pixels(catalogue.pixels[own][None], 1)[0][0]
    assert (found.item_id, found.label, found.label_name) == (UNLABELLED_TRAIN[0], None, None)
    labelled = recommender.similar_to_items(["train-000000"], 144)[0]
    assert {n.label for n in labelled} - {None} <= set(range(10)) and None in {n.label for n in labelled}


def test_refresh_sends_unlabelled_items_with_null_labels(lake) -> None:
    lake_dir, lineage = lake
    items, versions = read_items(str(lake_dir), ("train", "test"))
    assert versions == {t: s.version for t, s in lineage.tables.items()}
    sent = {row.item_id: new_item(row) for row in items.itertuples(index=False)}
    assert len(sent) == 145
    for item_id in [*UNLABELLED_TRAIN, "extra-000000", "extra-000001"]:
        assert (sent[item_id]["label"], sent[item_id]["label_name"]) == (None, None)
        NewItem.model_validate(sent[item_id])  # what the server's /admin/items accepts
    assert isinstance(sent["train-000000"]["label"], int)
    assert sent["train-000000"]["label_name"] == LABEL_NAMES[sent["train-000000"]["label"]]


def test_refresh_command_adds_the_lake_items_a_served_package_lacks(lake, tmp_path) -> None:
    """`simrec refresh` as the cluster runs it: in this (the steps) environment, reading the Delta lake
    ingest wrote, against a server running in the serve environment."""
    lake_dir, lineage = lake
    items, _ = read_items(str(lake_dir), ("train", "test"))
    served = items[items["item_id"].str.startswith("train-")].iloc[:100]
    pixels = np.stack([decode_png(png) for png in served["image"]])
    model_file = embedding_model_file(tmp_path / "model")
    package = write_package(
        tmp_path / "package", model_file, served, EmbeddingModel(model_file).embed_pixels(pixels)
    )
    admin_token = "refresh-test-admin-token"
    serve_python = str(paths.envs_dir() / "serve" / "bin" / "python")
    server = start_server(
        tmp_path, None, "--package", str(package), admin_token=admin_token, python=serve_python
    )
    command = [sys.executable, "-m", "simrec", "refresh", "--server", server.url, "--lake-uri", str(lake_dir)]
    try:
        runs = [
            subprocess.run(
                command, env=server_env(None, admin_token), capture_output=True, text=True, timeout=300
            )
            for _ in range(2)
        ]
        new_png = items.set_index("item_id").loc[UNLABELLED_TRAIN[0], "image"]
        found = server.post("/similar", json={"image": b64(new_png), "k": 1}).json()["items"][0]
    finally:
        server.stop()
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    first, second = (json.loads(run.stdout) for run in runs)
    assert (first["catalogue"], first["sent"], first["added"], first["served_items"]) == (145, 45, 45, 145)
    assert first["tables"] == {t: s.version for t, s in lineage.tables.items()}
    assert second["sent"] == 0 and second["added"] == 0
    assert (found["item_id"], found["label"], found["label_name"]) == (UNLABELLED_TRAIN[0], None, None)
