"""PNG bytes for request tests: good catalogue-shaped ones and each kind of wrong one."""

from __future__ import annotations

import io
import struct
import zlib

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


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(
    width: int = 28,
    height: int = 28,
    depth: int = 8,
    colour: int = 0,
    interlace: int = 0,
    before_data: bytes = b"",
    data: bytes | None = None,
) -> bytes:
    """A PNG assembled chunk by chunk, to say what Pillow's writer cannot (lying headers, odd depths,
    metadata chunks). `data`: the compressed IDAT payload (default: black rows of `depth`-bit gray)."""
    if data is None:
        row = 1 + (width * depth + 7) // 8  # the filter byte, then the packed samples
        data = zlib.compress(bytes(row * height))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + before_data
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def hostile_images() -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, part of the expected error message, or None for a 28x28 gray image that must be
    answered): what an attacker or a broken client sends. Each fits in the schema's 200,000-character
    image field as base64."""
    megabytes = zlib.compress(bytes(4 << 20), 9)  # 4 MiB of zeros in ~4 kB
    good = png(pattern(0))
    huge_chunk = good[:8] + b"\x7f\xff\xff\xff" + good[12:16]  # IHDR saying it has 2 GiB of data
    rgb16 = zlib.compress(bytes((1 + 28 * 6) * 28))
    return {
        # decompression bombs: the header declares what no catalogue image is, the data is tiny
        "bomb 20000x20000": (raw_png(20000, 20000, data=zlib.compress(b"\0" * 64)), "too many pixels"),
        "bomb 1x2000000000": (raw_png(1, 2_000_000_000, data=zlib.compress(b"")), "too many pixels"),
        "bomb 40x40": (raw_png(40, 40, data=zlib.compress(b"")), "too many pixels"),
        "29x28": (raw_png(29, 28), "29x28"),
        "0x0": (raw_png(0, 0, data=b""), "not a readable image"),
        "1x1": (raw_png(1, 1), "1x1"),
        # a valid 28x28 image whose pixel data inflates to 4 MiB (Pillow must stop at what 784 pixels need)
        "idat bomb": (raw_png(data=megabytes), None),
        # valid 28x28 images carrying oversized ancillary chunks
        "zTXt 4 MiB": (raw_png(before_data=chunk(b"zTXt", b"comment\0\0" + megabytes)), "not a readable"),
        "iCCP 4 MiB": (raw_png(before_data=chunk(b"iCCP", b"icc\0\0" + megabytes)), "not a readable"),
        "iTXt 4 MiB": (
            raw_png(before_data=chunk(b"iTXt", b"comment\0\1\0\0\0" + megabytes)),
            "not a readable",
        ),
        # plain text is no amplification: within the body limit it is read and ignored
        "tEXt 100 kB": (raw_png(before_data=chunk(b"tEXt", b"k\0" + b"x" * 100_000)), None),
        # modes and bit depths other than 8-bit gray
        "16-bit gray": (raw_png(depth=16), "mode is I;16"),
        "1-bit gray": (png(pattern(0), mode="1"), "mode is 1"),
        "palette": (png(pattern(0), mode="P"), "mode is P"),
        "gray+alpha": (png(pattern(0), mode="LA"), "mode is LA"),
        "16-bit RGB": (raw_png(depth=16, colour=2, data=rgb16), "mode is RGB"),
        "bad depth": (raw_png(depth=7), "not a readable image"),
        "bad colour type": (raw_png(colour=5), "not a readable image"),
        # damaged files
        "no IEND": (good[: good.rindex(b"IEND") - 4], None),  # Pillow stops reading after the pixels
        "bad CRC in IHDR": (good[:29] + bytes([good[29] ^ 0xFF]) + good[30:], "not a readable image"),
        "truncated IDAT": (raw_png(data=zlib.compress(bytes(100))), "not a readable image"),
        "not zlib": (raw_png(data=b"\x00" * 50), "not a readable image"),
        "chunk length 2 GiB": (huge_chunk, "not a readable"),
        "signature only": (b"\x89PNG\r\n\x1a\n", "not a readable image"),
        "signature and junk": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a readable image"),
    }
