import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from simrec.data.codec import ImageError, decode_png, encode_png, pixel_sha256
from simrec.data.idx import read_idx, write_idx
from simrec.infra.errors import DataError


def test_idx_round_trip(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    read = read_idx(tmp_path / "x-idx3-ubyte.gz", 3)
    np.testing.assert_array_equal(read.array, images)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00\x08", "too short for an IDX header"),
        ((0x801).to_bytes(4, "big") + (1).to_bytes(4, "big") * 3 + b"\x00", "wrong magic number 0x00000801"),
        (
            (0x803).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 784,
            "header says 2x28x28 items (1584 bytes) but the content has 800 bytes",
        ),
    ],
)
def test_bad_idx_names_file_and_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: .*{re.escape(message)}"):
        read_idx(path, 3)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00" * 1000)[:-20])
    with pytest.raises(DataError, match="cannot decompress"):
        read_idx(path, 1)


def test_png_round_trip_keeps_every_byte_value() -> None:
    pixels = np.arange(784, dtype=np.uint32).reshape(28, 28).astype(np.uint8)  # 0..255 repeated
    decoded = decode_png(encode_png(pixels))
    np.testing.assert_array_equal(decoded, pixels)
    assert pixel_sha256(decoded) == pixel_sha256(pixels)


def test_png_wrong_size_and_mode_rejected() -> None:
    import io

    from PIL import Image

    for image, message in [
        (Image.new("L", (32, 28)), "32x28, expected 28x28"),
        (Image.new("RGB", (28, 28)), "mode is RGB"),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        with pytest.raises(ImageError, match=message):
            decode_png(buffer.getvalue())
    with pytest.raises(ImageError, match="not a readable image"):
        decode_png(b"not a png")
