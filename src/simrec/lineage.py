"""Data lineage: ingest's record of the exact Delta table versions (and source checksums) later steps read.

It travels between steps as a JSON *parameter* (KFP caches on parameter values, not artifact content), so
`--lineage` takes the JSON text itself; a path to a JSON file is accepted too (tests, runs by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simrec.errors import InputError


def read_lineage(value: str | Path) -> dict[str, Any]:
    """The lineage from JSON text or a JSON file; InputError unless it names the train table's URI and
    version."""
    text = str(value)
    if isinstance(value, str) and text.lstrip().startswith("{"):
        where, what, raw = "--lineage", "JSON", text
    else:
        where, what = str(value), "file"
        try:
            raw = Path(value).read_text()
        except OSError as exc:
            raise InputError(
                f"{where}: not an ingest lineage file ({exc.__class__.__name__}: {exc})"
            ) from exc
    try:
        lineage = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not an ingest lineage {what} (JSONDecodeError: {exc})") from exc
    lineage = _whole_numbers(lineage)
    tables = lineage.get("tables") if isinstance(lineage, dict) else None
    train = tables.get("train") if isinstance(tables, dict) else None
    if (
        not isinstance(train, dict)
        or not isinstance(train.get("uri"), str)
        or not isinstance(train.get("version"), int)
    ):
        raise InputError(f"{where}: not an ingest lineage {what} (no tables.train.uri and .version)")
    return lineage


def _whole_numbers(value: Any) -> Any:
    """A JSON parameter passes through protobuf's Struct on KFP (and in kfp.local), where every number is a
    double: table version 3 arrives as 3.0. The lineage holds no fractions: whole numbers are ints again."""
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
