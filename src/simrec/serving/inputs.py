"""Request values to what the recommender takes: pixel arrays [n, 28, 28] uint8 or item ids. Every
problem is an InputError with a message that names the field, never an exception from deeper down."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simrec.data.codec import IMAGE_SIZE, decode_png
from simrec.infra.errors import InputError
from simrec.serving.schemas import MAX_BATCH, MAX_K, RequestInput

PIXEL_DATATYPES = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
DEFAULT_K = 5


@dataclass(frozen=True)
class Query:
    """Either images (pixels [n, 28, 28] uint8) or catalogue item ids."""

    pixels: np.ndarray | None = None
    item_ids: list[str] | None = None


def png_from_base64(text: str, field: str = "image") -> bytes:
    """Base64 (standard alphabet; a 'data:image/png;base64,' prefix is allowed) to bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{field}: not valid base64 ({exc})") from exc


def pixels_from_base64(text: str, field: str = "image") -> np.ndarray:
    try:
        return decode_png(png_from_base64(text, field))
    except InputError as exc:
        raise InputError(f"{field}: {exc}") from exc


def pixels_from_rows(rows: list[list[int]], field: str = "pixels") -> np.ndarray:
    if len(rows) != IMAGE_SIZE[0] or any(len(row) != IMAGE_SIZE[1] for row in rows):
        raise InputError(f"{field}: expected 28 rows of 28 values, got {len(rows)} rows")
    return np.asarray(rows, dtype=np.uint8)


def _flatten(data: list[Any], field: str, limit: int) -> list[Any]:
    """v2 tensor data may be flat or nested (row-major); depth is bounded by the checked shape."""
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
        elif isinstance(value, list):
            if len(stack) > 4:
                raise InputError(f"{field}: data nested too deeply")
            stack.append(iter(value))
        else:
            flat.append(value)
            if len(flat) > limit:
                raise InputError(f"{field}: more data than the shape holds ({limit})")
    return flat


_END = object()


def v2_query(tensor: RequestInput) -> Query:
    """One v2 input tensor: 'image' or 'item_id' (BYTES, shape [n] or [n, 1]) or 'pixels' (an integer
    datatype, shape [n, 28, 28] or [28, 28])."""
    field = f"input {tensor.name!r}"
    shape = tensor.shape
    if not shape or any(dim < 0 for dim in shape):
        raise InputError(f"{field}: shape must be a list of non-negative sizes, got {shape}")
    if tensor.name in ("image", "item_id"):
        if tensor.datatype != "BYTES":
            raise InputError(f"{field}: datatype must be BYTES, got {tensor.datatype!r}")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"{field}: shape must be [n] or [n, 1], got {shape}")
        count = _batch(field, shape[0])
        values = _flatten(tensor.data, field, MAX_BATCH)
        _check_count(field, count, len(values))
        if not all(isinstance(value, str) and value for value in values):
            raise InputError(f"{field}: every element must be a non-empty string")
        if tensor.name == "item_id":
            return Query(item_ids=values)
        return Query(pixels=np.stack([pixels_from_base64(v, f"{field}[{i}]") for i, v in enumerate(values)]))
    if tensor.name == "pixels":
        if tensor.datatype not in PIXEL_DATATYPES:
            raise InputError(f"{field}: datatype must be an integer type (UINT8...), got {tensor.datatype!r}")
        if list(shape[-2:]) != list(IMAGE_SIZE) or len(shape) not in (2, 3):
            raise InputError(f"{field}: shape must be [n, 28, 28] or [28, 28], got {shape}")
        count = _batch(field, shape[0] if len(shape) == 3 else 1)
        size = IMAGE_SIZE[0] * IMAGE_SIZE[1]
        values = _flatten(tensor.data, field, MAX_BATCH * size)
        _check_count(field, count, len(values) // size if len(values) % size == 0 else -1)
        if not all(type(value) is int and 0 <= value <= 255 for value in values):
            raise InputError(f"{field}: every element must be an integer 0-255")
        return Query(pixels=np.asarray(values, dtype=np.uint8).reshape(count, *IMAGE_SIZE))
    raise InputError(f"{field}: unknown input; use 'image' (BYTES), 'item_id' (BYTES) or 'pixels' (UINT8)")


def _batch(field: str, count: int) -> int:
    if not 1 <= count <= MAX_BATCH:
        raise InputError(f"{field}: batch size must be 1-{MAX_BATCH}, got {count}")
    return count


def _check_count(field: str, count: int, found: int) -> None:
    if found != count:
        raise InputError(f"{field}: data does not match the shape")


def k_parameter(parameters: dict[str, Any] | None) -> int:
    k = (parameters or {}).get("k", DEFAULT_K)
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise InputError(f"parameter k must be an integer 1-{MAX_K}, got {k!r}")
    return k


def finite(value: float) -> float:
    """Scores go into JSON; NaN/inf would make an invalid document."""
    return value if math.isfinite(value) else 0.0
