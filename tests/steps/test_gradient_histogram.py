"""GradientHistogram's formula (written so that tf2onnx exports it as few cheap ONNX nodes) against the
formula it replaced, on generated images and the edge cases of the orientation: angles of exactly 0, pi/2
and pi, negative zero gradients, blank and saturated images. Saved models re-run `call` when loaded, so
the packages built with the old formula get the new one: the two must agree to float rounding."""

import math
import random

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tf2onnx
from datagen import class_image

from simrec.embedding.descriptors import GradientHistogram
from simrec.embedding.onnx_model import session_options


def previous_gradient_histogram(images: tf.Tensor, cell: int = 4, bins: int = 9) -> tf.Tensor:
    """GradientHistogram.call before it was rewritten for ONNX, kept here only as the reference: atan2,
    floormod and two one_hots (tf2onnx expanded them into ~50 ONNX nodes)."""
    x = tf.cast(images[..., 0], tf.float32)
    height, width = int(x.shape[1]), int(x.shape[2])
    gx = tf.pad(x[:, :, 2:] - x[:, :, :-2], [[0, 0], [0, 0], [1, 1]])
    gy = tf.pad(x[:, 2:, :] - x[:, :-2, :], [[0, 0], [1, 1], [0, 0]])
    magnitude = tf.sqrt(gx * gx + gy * gy)
    position = tf.math.floormod(tf.atan2(gy, gx), math.pi) / math.pi * bins
    lower = tf.floor(position)
    upper_share = position - lower
    lower_bin = tf.math.floormod(tf.cast(lower, tf.int32), bins)
    votes = (
        tf.one_hot(lower_bin, bins) * (magnitude * (1.0 - upper_share))[..., None]
        + tf.one_hot(tf.math.floormod(lower_bin + 1, bins), bins) * (magnitude * upper_share)[..., None]
    )
    rows, columns = height // cell, width // cell
    cells = tf.reshape(votes, [-1, rows, cell, columns, cell, bins])
    return tf.reshape(tf.sqrt(tf.reduce_sum(cells, axis=[2, 4])), [-1, rows * columns * bins])


def exact_angle_images() -> np.ndarray:
    """Images whose every gradient has an angle computed exactly by both formulas: blank, saturated,
    edges at 0, pi/2 and pi (a light-to-dark step left to right), 0/255 checkerboards (pi/4, 3pi/4), and
    negative zero gradients (-0 - (+0) = -0): alone (no magnitude), gy = -0 with gx < 0 (atan2 gives -pi:
    bin 0) and, transposed, gx = -0 with gy < 0 (-pi/2: the bin of pi/2)."""
    blank, saturated = np.zeros((28, 28), np.float32), np.full((28, 28), 255.0, np.float32)
    rows, columns = np.indices((28, 28))
    steps = [np.where(columns >= 14, 255.0, 0.0), np.where(columns < 14, 255.0, 0.0)]
    steps += [step.T for step in steps]
    checker = (rows + columns) % 2 * 255.0
    negative_zeros = np.where(rows % 3 == 0, -0.0, 0.0)  # gy = -0 on the rows after them
    # rows 2, 5, ... step down from 255 to +0 between -0 and +0 rows: gx = -255, gy = -0 at the step
    signed_step = np.where((rows % 3 == 2) & (columns < 14), 255.0, negative_zeros)
    images = [blank, saturated, *steps, checker, negative_zeros, negative_zeros.T, signed_step, signed_step.T]
    return np.stack(images).astype(np.float32)


def generated_images() -> np.ndarray:
    """Catalogue-like drawn images, 8-bit noise and non-integer noise."""
    rng = random.Random(0)
    drawn = [np.frombuffer(class_image(i % 10, rng), np.uint8).reshape(28, 28) for i in range(60)]
    generator = np.random.default_rng(0)
    noise = generator.integers(0, 256, (30, 28, 28))
    real = generator.uniform(0.0, 255.0, (10, 28, 28))
    return np.concatenate([np.stack(drawn), noise, real]).astype(np.float32)


def _unit(histograms: np.ndarray) -> np.ndarray:
    return histograms / np.maximum(np.linalg.norm(histograms, axis=1, keepdims=True), 1e-12)


def test_exact_angles_give_the_previous_histogram() -> None:
    images = exact_angle_images()[..., None]
    new = GradientHistogram()(images).numpy()
    old = previous_gradient_histogram(tf.constant(images)).numpy()
    assert not np.isnan(new).any()
    assert new[0].max() == 0.0 and new[1].max() == 0.0  # no gradients, no votes
    assert np.abs(new - old).max() <= 1e-5


def test_generated_images_give_the_previous_histogram_to_float_rounding() -> None:
    images = generated_images()[..., None]
    new = GradientHistogram()(images).numpy()
    old = previous_gradient_histogram(tf.constant(images)).numpy()
    # atan(gy / gx) and atan2(gy, gx) may differ by an ulp or two of the angle; a vote of magnitude up to
    # 360 then moves ~1e-4 between two bins, and the square root magnifies that where a cell's sum is
    # small: raw values (up to ~76) differ by up to ~4e-5 here. What the model fuses, the L2-normalised
    # histogram, differs by ~1e-7.
    assert np.abs(new - old).max() <= 1e-4
    assert np.abs(_unit(new) - _unit(old)).max() <= 1e-6


@pytest.fixture(scope="module")
def exported_layer(tmp_path_factory):
    spec = [tf.TensorSpec((None, 28, 28, 1), tf.float32, name="image")]
    layer = GradientHistogram()
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda images: layer(images), input_signature=spec), input_signature=spec, opset=18
    )
    path = tmp_path_factory.mktemp("hog") / "hog.onnx"
    path.write_bytes(proto.SerializeToString())
    return proto, path


def test_the_onnx_export_is_one_node_per_op_and_gives_the_tensorflow_histogram(exported_layer) -> None:
    proto, path = exported_layer
    ops = {node.op_type for node in proto.graph.node}
    # what made the previous formula 63 nodes: the expansions of atan2 (Sign, ...), floormod (Floor) and
    # one_hot, and tf.where's (Not, then arithmetic)
    assert not ops & {"OneHot", "Sign", "Floor", "Not", "Where"}, ops
    assert len(proto.graph.node) <= 40
    images = np.concatenate([exact_angle_images(), generated_images()])
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"image": images[..., None]})[0]
    expected = GradientHistogram()(images[..., None]).numpy()
    assert not np.isnan(onnx).any()
    # ONNX Runtime's atan and TensorFlow's differ by an ulp here and there, magnified as above: 2.2e-4 on
    # the raw values, 7e-7 normalised, the same for the previous formula's export
    assert np.abs(onnx - expected).max() <= 1e-3
    assert np.abs(_unit(onnx) - _unit(expected)).max() <= 1e-5
