"""Data lineage: ingest's record of the exact Delta table versions (and source checksums) later steps read.

It travels between steps as a JSON *parameter* (KFP caches on parameter values, not artifact content), so
`--lineage` takes the JSON text itself; a path to a JSON file is accepted too (tests, runs by hand). The
record's shape is simrec.records.Lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simrec.infra.errors import InputError
from simrec.records import Lineage, parse_record


def read_lineage(value: str | Path) -> dict[str, Any]:
    """The lineage from JSON text or a JSON file, checked against records.Lineage (whole numbers that came
    through protobuf's Struct as floats are ints again), as the JSON data the steps pass on; InputError
    naming the source and the fields at fault otherwise."""
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
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not an ingest lineage {what} (JSONDecodeError: {exc})") from exc
    lineage = parse_record(Lineage, data, where, f"an ingest lineage {what}")
    return lineage.model_dump(mode="json", exclude_unset=True)  # what ingest wrote, nothing added
