"""The trained embedding model on Keras (where TensorFlow is installed: training, Spark workers in
evaluate, the ONNX export and its agreement check, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simrec.data.codec import IMAGE_SIZE
from simrec.embedding.embedder import PixelEmbedder, file_sha256


class EmbeddingModel(PixelEmbedder):
    """A saved embedding.keras; `model_id` (the file's SHA-256) names the vectors it produces."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        import simrec.embedding.descriptors  # noqa: F401  registers the descriptor layers a saved model may use

        self.path = Path(path)
        self.model_id = file_sha256(self.path)
        self._model = tf.keras.models.load_model(self.path, compile=False)
        self.dim = int(self._model.output_shape[-1])
        # One traced graph for any batch size: far less per-call overhead than Model.__call__/predict.
        # Called as its concrete function: the same graph without tf.function's per-call argument
        # matching; on the 70k benchmark package ~20% less time per call of 1 or 8 images (in-process,
        # interleaved, on a loaded machine).
        self._traced = tf.function(
            lambda images: self._model(images, training=False),
            input_signature=[tf.TensorSpec((None, *IMAGE_SIZE, 1), tf.float32)],
        ).get_concrete_function()

    def _forward(self, images: np.ndarray) -> np.ndarray:
        return self._traced(images).numpy()
