"""Reading IDX files (the MNIST family's format), gzip-compressed or not, with checks that name the file."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simrec.infra.errors import DataError

UBYTE = 0x08
MAGIC_BY_NDIM = {1: 0x00000801, 3: 0x00000803}


@dataclass(frozen=True)
class IdxArray:
    path: Path
    array: np.ndarray
    sha256: str  # of the decompressed content


def read_raw(path: Path) -> bytes:
    """The decompressed bytes of an IDX file (.gz or plain)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot decompress ({exc.__class__.__name__}: {exc})") from exc


def parse_idx(path: Path, content: bytes, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of `ndim` dimensions from decompressed content."""
    expected_magic = MAGIC_BY_NDIM[ndim]
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(f"{path}: {len(content)} bytes is too short for an IDX header")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_size = header_size + int(np.prod(dims))
    if len(content) != expected_size:
        raise DataError(
            f"{path}: header says {'x'.join(map(str, dims))} items ({expected_size} bytes) "
            f"but the content has {len(content)} bytes"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: Path, ndim: int) -> IdxArray:
    content = read_raw(path)
    return IdxArray(path, parse_idx(path, content, ndim), hashlib.sha256(content).hexdigest())


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes an unsigned-byte IDX file (gzip when the name ends in .gz); used for new catalogue batches."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = MAGIC_BY_NDIM[array.ndim].to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    content = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(content)
    else:
        path.write_bytes(content)
