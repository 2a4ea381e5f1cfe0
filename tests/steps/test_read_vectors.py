"""evaluate's read-back of the catalogue's vectors from the embeddings Delta table (`read_vectors`): in the
order asked, other models' and other items' rows ignored, and an item without a vector a clear error."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simrec.evaluate.catalogue_embeddings import EMBEDDING_SCHEMA, read_vectors


@pytest.fixture
def embeddings(spark, tmp_path: Path) -> tuple[str, np.ndarray]:
    vectors = np.random.default_rng(0).normal(size=(4, 3)).astype("<f4")
    rows = [("m1", f"item-{i}", vectors[i].tobytes()) for i in range(4)]
    rows += [("m2", "item-0", np.ones(3, "<f4").tobytes())]  # another model's vector of the same item
    uri = str(tmp_path / "embeddings")
    spark.createDataFrame(rows, EMBEDDING_SCHEMA).repartition(3).write.format("delta").save(uri)
    return uri, vectors


def test_vectors_come_back_in_the_order_asked(spark, embeddings) -> None:
    uri, vectors = embeddings
    asked = pd.Series(["item-3", "item-0", "item-2"])  # item-1 is in the table, not in this catalogue
    np.testing.assert_array_equal(read_vectors(spark, uri, "m1", 0, asked), vectors[[3, 0, 2]])


def test_an_item_without_a_vector_is_named(spark, embeddings) -> None:
    uri, _ = embeddings
    with pytest.raises(RuntimeError, match=r"embeddings@v0: no embedding of item-9 for model m1"):
        read_vectors(spark, uri, "m1", 0, pd.Series(["item-0", "item-9"]))
