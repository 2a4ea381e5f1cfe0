"""The ONNX export (what serving runs) against the Keras model it came from (what the index vectors were
made with), for the inference options the train step saves, on generated images; and the re-export of a
format 1 package."""

import json
import random
import shutil

import numpy as np
import pytest
import tensorflow as tf
from datagen import class_image
from packages import build_package

from simrec.embedding.embedder import file_sha256
from simrec.embedding.keras_model import EmbeddingModel
from simrec.embedding.onnx_export import OPSET, TOLERANCE, export_onnx
from simrec.embedding.onnx_model import OnnxEmbeddingModel
from simrec.recommender.package import MANIFEST_FILE, ONNX_FILE, PackageError, Recommender
from simrec.recommender.reexport import reexport_package
from simrec.train.model import build_embedding_model, inference_model


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Generated catalogue-like images, random noise, and the edge cases of the fusion's normalisation:
    a blank image (no pixels, no gradients) and a saturated one (pixels, no gradients)."""
    rng = random.Random(0)
    drawn = [np.frombuffer(class_image(i % 10, rng), np.uint8).reshape(28, 28) for i in range(40)]
    noise = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    flat = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    return np.concatenate([np.stack(drawn), noise, flat])


@pytest.mark.parametrize(
    ("architecture", "flip", "pixel_weight", "hog_weight"),
    [("seed", False, 0.0, 0.0), ("strong", True, 0.0, 0.3), ("seed", True, 0.2, 0.3)],
    ids=["plain embedder", "train defaults: flip + HOG", "flip + pixels + HOG"],
)
def test_the_onnx_export_gives_the_keras_vectors(
    images, architecture, flip, pixel_weight, hog_weight, tmp_path
) -> None:
    tf.keras.utils.set_random_seed(0)
    embedder = build_embedding_model(architecture, 16, 0.1)  # dropout: must be off in the export
    inference_model(embedder, flip, pixel_weight, hog_weight).save(tmp_path / "embedding.keras")
    record = export_onnx(tmp_path / "embedding.keras", tmp_path / "embedding.onnx")
    assert record["opset"] == OPSET

    keras = EmbeddingModel(tmp_path / "embedding.keras").embed_pixels(images)
    onnx = OnnxEmbeddingModel(tmp_path / "embedding.onnx", "model-id").embed_pixels(images)
    assert onnx.shape == keras.shape and onnx.dtype == np.float32
    assert np.abs(onnx - keras).max() <= TOLERANCE
    # batches of any size, as the server sends them
    np.testing.assert_array_equal(
        OnnxEmbeddingModel(tmp_path / "embedding.onnx", "model-id").embed_pixels(images[:1]), onnx[:1]
    )


def test_a_format_1_package_is_refused_until_it_is_re_exported(tmp_path) -> None:
    package = build_package(tmp_path / "package", count=60)
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    old = shutil.copytree(package, tmp_path / "old")
    (old / ONNX_FILE).unlink()
    (old / MANIFEST_FILE).write_text(json.dumps(manifest | {"format": 1, "onnx": None}))
    with pytest.raises(
        PackageError, match=r"format 1 has no embedding.onnx; re-export it with `simrec export-onnx"
    ):
        Recommender(old)

    entry = reexport_package(old)
    assert entry["sha256"] == file_sha256(old / ONNX_FILE)  # (tf2onnx's node names differ run to run)
    assert entry["agreement"]["images"] == 60 and entry["agreement"]["max_abs_diff"] <= TOLERANCE
    assert Recommender(old).check_smoke_queries() == []
    assert Recommender(old, runtime="keras").check_smoke_queries() == []  # the TF path gives the same answers
