"""Embedding models: a CNN mapping a 28x28 grayscale image (pixel values 0-255) to an L2-normalised
embedding, plus the cosine-softmax head used only while training.

The saved embedding model uses built-in Keras layers only, so serving loads it without simrec code — except
with `hog_weight` > 0, whose descriptor layer simrec.embedding.keras_model registers before loading."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import tensorflow as tf

from simrec.embedding.descriptors import GradientHistogram

Architecture = Literal["seed", "strong"]
ARCHITECTURES: tuple[str, ...] = ("seed", "strong")
INPUT_SHAPE = (28, 28, 1)


def _seed_features(x: tf.Tensor, dropout: float) -> tf.Tensor:
    """The reference design: one 3x3 convolution, max-pooling, dropout."""
    x = tf.keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = tf.keras.layers.MaxPooling2D(2)(x)
    x = tf.keras.layers.Dropout(dropout)(x)
    return tf.keras.layers.Flatten()(x)


def _strong_features(x: tf.Tensor, dropout: float) -> tf.Tensor:
    """A small VGG-style network: three blocks of two 3x3 convolutions with BatchNorm, global pooling."""
    for filters in (32, 64, 128):
        for _ in range(2):
            x = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = tf.keras.layers.BatchNormalization()(x)
            x = tf.keras.layers.ReLU()(x)
        if filters != 128:
            x = tf.keras.layers.MaxPooling2D(2)(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.layers.Dropout(dropout)(x)


def build_embedding_model(architecture: str, embedding_dim: int, dropout: float) -> tf.keras.Model:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    images = tf.keras.Input(shape=INPUT_SHAPE, name="image")
    x = tf.keras.layers.Rescaling(1.0 / 255.0)(images)
    features = (_seed_features if architecture == "seed" else _strong_features)(x, dropout)
    x = tf.keras.layers.Dense(embedding_dim, name="projection")(features)
    embedding = tf.keras.layers.UnitNormalization(name="embedding")(x)
    return tf.keras.Model(images, embedding, name=f"simrec_{architecture}")


def _mirrored(images: tf.Tensor) -> tf.Tensor:
    """Images flipped left-right by a fixed permutation (a frozen Dense over the width axis: a built-in
    layer, so serving loads the model without simrec code; exact, as each output is one input times 1)."""
    height, width, _ = INPUT_SHAPE
    rows = tf.keras.layers.Reshape((height, width))(images)
    mirror = tf.keras.layers.Dense(width, use_bias=False, trainable=False, name="mirror")
    flipped = mirror(rows)
    mirror.set_weights([np.eye(width, dtype=np.float32)[::-1]])
    return tf.keras.layers.Reshape(INPUT_SHAPE)(flipped)


def inference_model(
    embedder: tf.keras.Model, flip_average: bool, pixel_weight: float, hog_weight: float = 0.0
) -> tf.keras.Model:
    """The model that is saved, evaluated and served: the trained embedder, optionally averaged with its
    embedding of the left-right mirrored image (test-time augmentation; training flips images too), and
    optionally fused with training-free descriptors of the image — its L2-normalised pixels
    (`pixel_weight`) and its normalised histograms of oriented gradients (`hog_weight`, 441 values) — so
    that the cosine of two fused vectors is (1 - pixel_weight - hog_weight) x embedding cosine +
    pixel_weight x pixel cosine + hog_weight x HOG cosine (for images with some pixels and gradients).
    Shares the embedder's weights."""
    if pixel_weight + hog_weight >= 1.0:
        raise ValueError(f"pixel_weight + hog_weight must be below 1, got {pixel_weight} + {hog_weight}")
    if not flip_average and pixel_weight == 0.0 and hog_weight == 0.0:
        return embedder
    images = tf.keras.Input(shape=INPUT_SHAPE, name="image")
    embedding = embedder(images)
    if flip_average:
        averaged = tf.keras.layers.Average()([embedding, embedder(_mirrored(images))])
        embedding = tf.keras.layers.UnitNormalization(name="flip_averaged")(averaged)
    descriptors = {
        "pixels": (pixel_weight, lambda: tf.keras.layers.Flatten()(images)),
        "hog": (hog_weight, lambda: GradientHistogram(name="gradient_histogram")(images)),
    }
    parts = [(1.0 - pixel_weight - hog_weight, embedding)] + [
        (weight, tf.keras.layers.UnitNormalization(name=f"{name}_normalised")(describe()))
        for name, (weight, describe) in descriptors.items()
        if weight > 0.0
    ]
    if len(parts) > 1:
        fused = tf.keras.layers.Concatenate(name="fused")(
            [tf.keras.layers.Rescaling(math.sqrt(weight))(part) for weight, part in parts]
        )
        # A no-op while every part is a unit vector; a blank image has no pixels or gradients to normalise
        # (that part is zero), and this keeps its vector unit-length, the embedding taking the share.
        embedding = tf.keras.layers.UnitNormalization(name="fused_normalised")(fused)
    return tf.keras.Model(images, embedding, name=f"{embedder.name}_inference")


class CosineSoftmax(tf.keras.layers.Layer):
    """Normalised-softmax classification head: logits = scale * cos(embedding, class weight)."""

    def __init__(self, num_classes: int, scale: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.scale = scale

    def build(self, input_shape: tf.TensorShape) -> None:
        self.class_weights = self.add_weight(
            name="class_weights",
            shape=(int(input_shape[-1]), self.num_classes),
            initializer="glorot_uniform",
        )

    def call(self, embeddings: tf.Tensor) -> tf.Tensor:
        weights = tf.math.l2_normalize(self.class_weights, axis=0)
        return self.scale * tf.matmul(tf.math.l2_normalize(embeddings, axis=1), weights)
