"""The image codec: catalogue images are stored and served as 8-bit grayscale 28x28 PNG bytes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from simrec.errors import InputError

IMAGE_SIZE = (28, 28)  # (height, width)
IMAGE_MODE = "L"


class ImageError(InputError):
    """Bytes that are not a catalogue image."""


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of one 28x28 uint8 image."""
    if pixels.shape != IMAGE_SIZE or pixels.dtype != np.uint8:
        raise ImageError(f"expected a {IMAGE_SIZE} uint8 array, got {pixels.shape} {pixels.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=IMAGE_MODE).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The 28x28 uint8 pixels of PNG bytes; ImageError if they are not an 8-bit grayscale 28x28 PNG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ImageError(f"not a PNG image (format {image.format})")
            if image.mode != IMAGE_MODE:
                raise ImageError(f"PNG mode is {image.mode}, expected {IMAGE_MODE} (8-bit grayscale)")
            if image.size[::-1] != IMAGE_SIZE:
                raise ImageError(f"PNG is {image.size[0]}x{image.size[1]}, expected 28x28")
            return np.asarray(image, dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        # PIL's message names an in-memory object address, which tells the reader nothing.
        raise ImageError("not a readable image (the bytes are not a known image format)") from exc
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"not a readable image: {exc}") from exc


def pixel_sha256(pixels: np.ndarray) -> str:
    """Content checksum of an image: SHA-256 of its raw row-major pixels (independent of PNG encoding)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()
