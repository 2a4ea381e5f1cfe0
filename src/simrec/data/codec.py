"""The image codec: catalogue images are stored and served as 8-bit grayscale 28x28 PNG bytes."""

from __future__ import annotations

import base64
import hashlib
import io
import warnings

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from simrec.infra.errors import InputError

IMAGE_SIZE = (28, 28)  # (height, width)
IMAGE_MODE = "L"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's own limits, for every image this process opens (every one this project opens is a catalogue
# image: 784 pixels, no text chunks). A PNG whose header declares over twice 784 pixels is refused as Pillow
# reads the header, before a byte of pixel data is decompressed (DecompressionBombError); between 784 and
# twice that, Pillow only warns and decode_png's exact size check refuses it, so the warning is noise.
# Ancillary chunks (text, ICC profile) may not decompress to more than 64 KiB each, 256 KiB together,
# instead of Pillow's 1 MiB and 64 MiB: a request can no longer make the server inflate megabytes.
Image.MAX_IMAGE_PIXELS = IMAGE_SIZE[0] * IMAGE_SIZE[1]
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
PngImagePlugin.MAX_TEXT_CHUNK = 64 << 10
PngImagePlugin.MAX_TEXT_MEMORY = 256 << 10


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
    """The 28x28 uint8 pixels of PNG bytes; ImageError if they are not an 8-bit grayscale 28x28 PNG.

    The bytes may come from anyone (a request), so only Pillow's PNG reader sees them, the size the header
    declares is checked before any pixel is decoded, and every failure of decoding is an ImageError: Pillow
    raises OSError, SyntaxError, ValueError (oversized chunks), DecompressionBombError, EOFError, zlib and
    struct errors, depending on where in the file the damage is."""
    if not data.startswith(PNG_SIGNATURE):
        raise ImageError("not a readable image: not a PNG (the bytes do not start with the PNG signature)")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.size[::-1] != IMAGE_SIZE:
                raise ImageError(f"PNG is {image.size[0]}x{image.size[1]}, expected 28x28")
            if image.mode != IMAGE_MODE:
                raise ImageError(f"PNG mode is {image.mode}, expected {IMAGE_MODE} (8-bit grayscale)")
            return np.asarray(image, dtype=np.uint8).copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"PNG declares too many pixels, expected 28x28 ({exc})") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names an in-memory object address, which tells the reader nothing.
        raise ImageError("not a readable image (a PNG signature, then no valid PNG header)") from exc
    except Exception as exc:  # see the docstring: any failure here means the bytes are not readable
        raise ImageError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def pixel_sha256(pixels: np.ndarray) -> str:
    """Content checksum of an image: SHA-256 of its raw row-major pixels (independent of PNG encoding)."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def png_base64(png: bytes) -> str:
    """PNG bytes as the base64 text every JSON body carries them in (requests, answers, the pyfunc)."""
    return base64.b64encode(png).decode("ascii")
