"""The embedding model at serving time: the package's embedding.onnx on ONNX Runtime, without TensorFlow.

Same contract as simrec.embedding.keras_model.EmbeddingModel (the Keras loader the steps image keeps for
training and Spark): 8-bit grayscale 28x28 images in, L2-normalised float32 vectors out. The ONNX file is
exported from the Keras model by simrec.embedding.onnx_export (steps image), which also records how
closely the two agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simrec.data.codec import IMAGE_SIZE
from simrec.embedding.embedder import PixelEmbedder, file_sha256


def session_options(intra_op_threads: int = 1):
    """ORT session options, chosen by measurement (docs/serving.md, "ONNX Runtime"):
    - intra-op threads: 1 per session by default. The server runs one batch per model thread, side by
      side, so the cores are used by concurrent batches; a batch of 1-8 small images gains nothing from
      splitting, and ORT's spinning pool threads would steal the cores from the other batches.
    - no spinning: an idle intra-op thread would otherwise busy-wait, burning a core between requests.
    - graph optimisation: all (constant folding, fusions, layout); applied once at load.
    - the CPU memory arena stays on: it recycles the same few buffers for every call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT warns on each optimiser fallback
    return options


class OnnxEmbeddingModel(PixelEmbedder):
    """A package's embedding.onnx on ONNX Runtime's CPU provider. `model_id` is the Keras file's id (the
    one the index vectors were made with), given by the package; `onnx_sha256` names this file."""

    def __init__(self, path: Path, model_id: str, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.model_id = model_id
        self.onnx_sha256 = file_sha256(self.path)
        # One session shared by every model thread: InferenceSession.run is thread-safe and releases the
        # GIL, so batches from several threads run in parallel on one copy of the weights.
        self._session = ort.InferenceSession(
            str(self.path), session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [*IMAGE_SIZE, 1] or len(outputs) != 1:
            raise ValueError(f"{self.path}: not an embedding model (input [n, 28, 28, 1], one output)")
        self._input = inputs[0].name
        dim = outputs[0].shape[-1]
        if not isinstance(dim, int):
            raise ValueError(f"{self.path}: the output's size is not fixed ({dim})")
        self.dim = dim

    def _forward(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: images})[0]
