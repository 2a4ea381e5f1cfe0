"""Training-free image descriptors that the saved model can fuse with its learned embedding. They keep
what a classifier's embedding discards — the shape of edges — and so carry over to product categories
the model never saw (docs/quality-ablation.md). A Keras layer, registered for loading: importing
`simrec.embedding.keras_model` (every place that loads a model) registers it."""

from __future__ import annotations

import math

import tensorflow as tf


@tf.keras.saving.register_keras_serializable(package="simrec")
class GradientHistogram(tf.keras.layers.Layer):
    """Histograms of oriented gradients (Dalal & Triggs 2005) of [n, h, w, 1] images, without block
    normalisation: central-difference gradients (zero on the border rows/columns), unsigned orientation
    in `bins` bins over [0, pi), each pixel's magnitude split linearly between its two nearest bins,
    summed over `cell` x `cell` cells, square-rooted. Output [n, (h/cell) * (w/cell) * bins]."""

    def __init__(self, cell: int = 4, bins: int = 9, **kwargs: object) -> None:
        super().__init__(trainable=False, **kwargs)
        self.cell = cell
        self.bins = bins

    def call(self, images: tf.Tensor) -> tf.Tensor:
        # Written for ONNX as much as for TensorFlow: tf2onnx turns every op here into one ONNX node (36;
        # atan2, floormod and one_hot, which it expands, made the previous formula 63), and on ~28 x 28 x 9
        # values an image ONNX Runtime's cost is per node more than per value (docs/serving.md).
        height, width = int(images.shape[1]), int(images.shape[2])
        x = tf.reshape(tf.cast(images, tf.float32), [-1, height, width])
        gx = tf.pad(x[:, :, 2:] - x[:, :, :-2], [[0, 0], [0, 0], [1, 1]])
        gy = tf.pad(x[:, 2:, :] - x[:, :-2, :], [[0, 0], [1, 1], [0, 0]])
        magnitude = tf.sqrt(gx * gx + gy * gy)
        # The unsigned orientation in [0, pi]: atan2(gy, gx) mod pi is atan(gy / gx) mod pi. Where there
        # is no gradient, 0 / 1 instead of 0 / 0 (NaN): angle 0, and its votes are zero either way. (Casts
        # rather than tf.where, which tf2onnx turns into six nodes.)
        slope = tf.atan(gy / (gx + tf.cast(magnitude == 0.0, tf.float32)))
        angle = slope + math.pi * tf.cast(slope < 0.0, tf.float32)
        position = angle / math.pi * self.bins  # in [0, bins]; bins (an angle of exactly pi) is bin 0
        # Each pixel's magnitude split linearly between its two nearest bins: bin b's share is
        # 1 - (circular distance from the position to b), where that is below 1.
        distance = tf.abs(tf.expand_dims(position, -1) - tf.range(self.bins, dtype=tf.float32))
        circular = tf.minimum(distance, self.bins - distance)
        votes = tf.nn.relu(1.0 - circular) * tf.expand_dims(magnitude, -1)
        rows, columns = height // self.cell, width // self.cell
        cells = tf.reshape(votes, [-1, rows, self.cell, columns, self.cell, self.bins])
        return tf.reshape(tf.sqrt(tf.reduce_sum(cells, axis=[2, 4])), [-1, rows * columns * self.bins])

    def compute_output_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        return tf.TensorShape(
            [input_shape[0], (input_shape[1] // self.cell) * (input_shape[2] // self.cell) * self.bins]
        )

    def get_config(self) -> dict[str, object]:
        config = super().get_config()
        config.pop("trainable", None)
        return config | {"cell": self.cell, "bins": self.bins}
