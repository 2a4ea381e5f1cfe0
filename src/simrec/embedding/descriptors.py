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
        x = tf.cast(images[..., 0], tf.float32)
        height, width = int(x.shape[1]), int(x.shape[2])
        gx = tf.pad(x[:, :, 2:] - x[:, :, :-2], [[0, 0], [0, 0], [1, 1]])
        gy = tf.pad(x[:, 2:, :] - x[:, :-2, :], [[0, 0], [1, 1], [0, 0]])
        magnitude = tf.sqrt(gx * gx + gy * gy)
        position = tf.math.floormod(tf.atan2(gy, gx), math.pi) / math.pi * self.bins
        lower = tf.floor(position)
        upper_share = position - lower
        lower_bin = tf.math.floormod(tf.cast(lower, tf.int32), self.bins)  # an angle of exactly pi is bin 0
        votes = (
            tf.one_hot(lower_bin, self.bins) * (magnitude * (1.0 - upper_share))[..., None]
            + tf.one_hot(tf.math.floormod(lower_bin + 1, self.bins), self.bins)
            * (magnitude * upper_share)[..., None]
        )
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
