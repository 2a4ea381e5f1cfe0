"""The saved inference model (embedding, flip averaging, pixel and HOG fusion, final normalisation) as
ONNX, for serving on ONNX Runtime (steps image: TensorFlow, tf2onnx). Also how closely the exported model
agrees with Keras, which evaluate records in the package and validate checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simrec.data.codec import IMAGE_SIZE

# tf2onnx 1.17's newest opset (its OPSET_TO_IR_VERSION ends at 18); onnxruntime 1.32, pinned in both
# images, runs every opset up to 23, so the newest the converter writes is the one to use.
OPSET = 18
# The largest |ONNX - Keras| over a package's vectors (unit vectors, so per component) that a package may
# have: float32 kernels in another order differ by ~1e-7; 1e-4 is far above that and far below any change
# of neighbours a user could see. Used by evaluate (measures), the gate and validate (refuse).
TOLERANCE = 1e-4


def export_onnx(keras_file: Path, onnx_file: Path, opset: int = OPSET) -> dict[str, Any]:
    """Converts the saved Keras model to `onnx_file`; returns what the manifest records about it."""
    import tensorflow as tf
    import tf2onnx

    import simrec.embedding.descriptors  # noqa: F401  registers the HOG layer a saved model may use

    model = tf.keras.models.load_model(keras_file, compile=False)
    # The function EmbeddingModel traces (training=False: dropout off, BatchNorm's moving statistics), with
    # a batch dimension of any size and the input named as the ONNX model's callers expect.
    spec = [tf.TensorSpec((None, *IMAGE_SIZE, 1), tf.float32, name="image")]
    forward = tf.function(lambda images: model(images, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    partial = onnx_file.with_suffix(".onnx.partial")
    partial.write_bytes(proto.SerializeToString())
    partial.replace(onnx_file)
    return {"opset": opset, "tf2onnx": tf2onnx.__version__}


def agreement(keras_vectors: np.ndarray, onnx_vectors: np.ndarray, index: Any = None, k: int = 5) -> dict:
    """How far the ONNX model's vectors are from Keras's for the same images: the largest and mean
    absolute difference, and (with an index) the share of images whose top-k neighbours are identical."""
    if keras_vectors.shape != onnx_vectors.shape:
        raise ValueError(f"vectors of shape {keras_vectors.shape} and {onnx_vectors.shape}")
    difference = np.abs(keras_vectors.astype(np.float64) - onnx_vectors.astype(np.float64))
    record: dict[str, Any] = {
        "images": len(keras_vectors),
        "max_abs_diff": float(difference.max()) if difference.size else 0.0,
        "mean_abs_diff": float(difference.mean()) if difference.size else 0.0,
        "tolerance": TOLERANCE,
    }
    if index is not None and len(keras_vectors):
        from simrec.retrieval.index import search

        _, keras_rows = search(index, keras_vectors, k)
        _, onnx_rows = search(index, onnx_vectors, k)
        record[f"top{k}_identical"] = float((keras_rows == onnx_rows).all(axis=1).mean())
    return record


def disagreement(record: dict[str, Any] | None) -> str | None:
    """Why a recorded agreement is not good enough to serve the ONNX model, or None when it is. Only the
    vectors' difference decides: the share of identical top-k lists is recorded, not required, because
    catalogue duplicates (Fashion-MNIST has some) tie exactly and any difference may reorder them; the
    package's smoke queries must still answer exactly as recorded."""
    if not record:
        return "no ONNX agreement recorded (re-export the package with the steps image)"
    if not record.get("max_abs_diff", np.inf) <= TOLERANCE:
        return f"ONNX and Keras vectors differ by up to {record.get('max_abs_diff')} (tolerance {TOLERANCE})"
    return None
