"""The saved model's inference options (flip averaging, pixel and HOG fusion) against NumPy, through the
loader evaluate and serving use, and the cosine learning-rate schedule."""

import numpy as np
import pytest
import tensorflow as tf

from simrec.embedding.descriptors import GradientHistogram
from simrec.embedding.keras_model import EmbeddingModel
from simrec.infra.errors import InputError
from simrec.train.loop import WARMUP_SHARE, learning_rate
from simrec.train.model import build_embedding_model, inference_model
from simrec.train.params import TrainParams


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embedder() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    return build_embedding_model("seed", 8, 0.0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    pixels[:, :, :10] = 0  # not mirror-symmetric, so a wrong flip shows
    return pixels


@pytest.mark.parametrize(("flip", "weight"), [(True, 0.0), (False, 0.3), (True, 0.4)])
def test_saved_inference_model_is_the_formula(embedder, images, flip, weight, tmp_path) -> None:
    path = tmp_path / "embedding.keras"
    inference_model(embedder, flip, weight).save(path)
    got = EmbeddingModel(path).embed_pixels(images)  # what evaluate's workers run (serving: its ONNX export)

    x = images[..., None].astype(np.float32)
    embedding = embedder(x).numpy()
    if flip:
        embedding = _unit(embedding + embedder(x[:, :, ::-1]).numpy())
    expected = embedding
    if weight:
        pixels = _unit(images.reshape(len(images), -1).astype(np.float64))
        expected = np.concatenate([np.sqrt(1 - weight) * embedding, np.sqrt(weight) * pixels], axis=1)
        # the point of the fusion: cosine = (1 - w) embedding cosine + w pixel cosine
        np.testing.assert_allclose(
            got @ got.T, (1 - weight) * embedding @ embedding.T + weight * pixels @ pixels.T, atol=1e-5
        )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def gradient_histogram_numpy(image: np.ndarray, cell: int = 4, bins: int = 9) -> np.ndarray:
    """HOG as written down by Dalal & Triggs, pixel by pixel: central differences (0 on the border),
    unsigned angle, magnitude split linearly between the two nearest of `bins` bins, cell sums, sqrt."""
    x = image.astype(np.float64)
    size = x.shape[0]
    histogram = np.zeros((size // cell, size // cell, bins))
    for r in range(size):
        for c in range(size):
            gx = x[r, c + 1] - x[r, c - 1] if 0 < c < size - 1 else 0.0
            gy = x[r + 1, c] - x[r - 1, c] if 0 < r < size - 1 else 0.0
            angle = np.arctan2(gy, gx) % np.pi
            position = angle / np.pi * bins
            lower = int(np.floor(position))
            share = position - lower
            magnitude = np.hypot(gx, gy)
            histogram[r // cell, c // cell, lower % bins] += magnitude * (1 - share)
            histogram[r // cell, c // cell, (lower + 1) % bins] += magnitude * share
    return np.sqrt(histogram).reshape(-1)


def test_gradient_histogram_is_hog_written_out(images) -> None:
    expected = np.stack([gradient_histogram_numpy(image) for image in images])
    got = GradientHistogram()(images[..., None].astype(np.float32)).numpy()
    assert got.shape == (len(images), 7 * 7 * 9)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_hog_fusion_cosine_is_the_weighted_sum_and_loads_with_the_layer_registered(
    embedder, images, tmp_path
):
    path = tmp_path / "embedding.keras"
    inference_model(embedder, True, 0.1, hog_weight=0.4).save(path)
    got = EmbeddingModel(path).embed_pixels(images)  # loads the custom layer by simrec's registration

    x = images[..., None].astype(np.float32)
    embedding = _unit(embedder(x).numpy() + embedder(x[:, :, ::-1]).numpy())
    pixels = _unit(images.reshape(len(images), -1).astype(np.float64))
    hog = _unit(np.stack([gradient_histogram_numpy(image) for image in images]))
    assert got.shape == (len(images), 8 + 784 + 441)
    np.testing.assert_allclose(
        got @ got.T,
        0.5 * embedding @ embedding.T + 0.1 * pixels @ pixels.T + 0.4 * hog @ hog.T,
        atol=1e-5,
    )


def test_an_image_without_gradients_still_gets_a_unit_vector(embedder, tmp_path) -> None:
    """A uniform image has no gradients to normalise (its HOG is zero): the other parts take the share."""
    path = tmp_path / "embedding.keras"
    inference_model(embedder, True, 0.2, hog_weight=0.5).save(path)
    uniform = np.full((2, 28, 28), 128, np.uint8)
    got = EmbeddingModel(path).embed_pixels(uniform)
    x = uniform[..., None].astype(np.float32)
    embedding = _unit(embedder(x).numpy() + embedder(x[:, :, ::-1]).numpy())
    pixels = _unit(uniform.reshape(2, -1).astype(np.float64))
    expected = np.concatenate([np.sqrt(0.3) * embedding, np.sqrt(0.2) * pixels, np.zeros((2, 441))], axis=1)
    np.testing.assert_allclose(got, expected / np.sqrt(0.5), atol=1e-5)


def test_descriptor_weights_must_leave_the_embedding_a_share(embedder) -> None:
    with pytest.raises(InputError, match="pixel_weight \\+ hog_weight must be below 1"):
        TrainParams.component_defaults(pixel_weight=0.5, hog_weight=0.5)
    with pytest.raises(ValueError, match="below 1"):
        inference_model(embedder, False, 0.6, hog_weight=0.4)


def test_without_options_the_embedder_itself_is_saved(embedder) -> None:
    assert inference_model(embedder, False, 0.0) is embedder


def test_flip_averaged_embedding_is_mirror_invariant(embedder, images, tmp_path) -> None:
    path = tmp_path / "embedding.keras"
    inference_model(embedder, True, 0.0).save(path)
    model = EmbeddingModel(path)
    np.testing.assert_allclose(model.embed_pixels(images), model.embed_pixels(images[:, :, ::-1]), atol=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    params = TrainParams.component_defaults(lr_schedule="cosine", learning_rate=0.002, epochs=4)
    schedule = learning_rate(params, steps_per_epoch=50, world_size=2)
    warmup = int(WARMUP_SHARE * 200)
    rates = np.array([float(schedule(step)) for step in range(201)])
    assert rates[0] == 0.0 and rates[warmup] == pytest.approx(0.004)  # peak: rate x world size
    assert np.all(np.diff(rates[: warmup + 1]) > 0) and np.all(np.diff(rates[warmup:]) <= 0)
    assert rates[200] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(params.model_copy(update={"lr_schedule": "constant"}), 50, 2) == 0.004
