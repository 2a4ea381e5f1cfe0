"""Embedding models: a CNN mapping a 28x28 grayscale image (pixel values 0-255) to an L2-normalised
embedding, plus the cosine-softmax head used only while training.

The saved embedding model uses built-in Keras layers only, so serving loads it without simrec code."""

from __future__ import annotations

from typing import Literal

import tensorflow as tf

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
