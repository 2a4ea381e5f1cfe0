"""What every embedding model offers, whatever runs it: catalogue images (8-bit grayscale 28x28) to
L2-normalised float32 vectors in batches; the raw-pixel baseline; the file digest that names a model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from simrec.data.codec import IMAGE_SIZE, decode_png

# Images per model call. 64 costs the same CPU per image as 1024 on both runtimes (measured on the 70k
# package, 4,096 images: ONNX Runtime 0.625 vs 0.663 ms, Keras 0.640 vs 0.631 ms) and bounds the
# activations a call allocates: ONNX Runtime's arena kept 420 MB after a 1024-image call, 23 MB after 64s
# (a live refresh embeds its items in these batches, in the serving process).
BATCH = 64


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PixelEmbedder:
    """What every embedding model offers: images (pixels or PNGs) in, `dim`-sized vectors out, in
    batches of BATCH through the runtime's own `_forward`."""

    dim: int

    def _forward(self, images: np.ndarray) -> np.ndarray:
        """[n, 28, 28, 1] float32 -> [n, dim] float32."""
        raise NotImplementedError

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """[n, 28, 28] uint8 pixel values -> [n, dim] float32 unit vectors."""
        if pixels.ndim != 3 or pixels.shape[1:] != IMAGE_SIZE:
            raise ValueError(f"expected images of shape [n, 28, 28], got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        batches = [
            self._forward(pixels[i : i + BATCH, ..., None].astype(np.float32))
            for i in range(0, len(pixels), BATCH)
        ]
        return np.concatenate(batches).astype(np.float32, copy=False)

    def embed_pngs(self, pngs: list[bytes]) -> np.ndarray:
        return self.embed_pixels(
            np.stack([decode_png(png) for png in pngs]) if pngs else np.zeros((0, 28, 28), np.uint8)
        )


def pixel_vectors(pixels: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline: each image's 784 pixel values as an L2-normalised float32 vector."""
    flat = pixels.reshape(len(pixels), -1).astype(np.float32)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-12)
