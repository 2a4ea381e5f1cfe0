"""PNG bytes for request tests: good catalogue-shaped ones and each kind of wrong one."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(pixels: np.ndarray, mode: str = "L", format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=format)
    return buffer.getvalue()


def pattern(seed: int, size: int = 28) -> np.ndarray:
    """An image unlike the generated catalogue's bars: a bright checkerboard with noise."""
    rng = np.random.default_rng(seed)
    checks = (np.indices((size, size)).sum(axis=0) // 4) % 2
    return (checks * 200 + rng.integers(0, 55, (size, size))).astype(np.uint8)


def bad_images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, part of the expected error message)."""
    good = png(pattern(0))
    return {
        "gif": (png(pattern(0), format="GIF"), "not a PNG"),
        "jpeg": (png(pattern(0), format="JPEG"), "not a PNG"),
        "rgb": (png(pattern(0), mode="RGB"), "mode is RGB"),
        "rgba": (png(pattern(0), mode="RGBA"), "mode is RGBA"),
        "too big": (png(pattern(0, 32)), "32x32"),
        "too small": (png(pattern(0, 8)), "8x8"),
        "truncated": (good[: len(good) // 2], "not a readable image"),
        "text": (b"hello, this is not an image", "not a readable image"),
        "empty": (b"", "not a readable image"),
    }
