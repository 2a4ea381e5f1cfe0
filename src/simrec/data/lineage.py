"""Data lineage: ingest's record of the exact Delta table versions (and source checksums) later steps read.

It travels between steps as a JSON *parameter* (KFP caches on parameter values, not artifact content), so
`--lineage` takes the JSON text itself; a path to a JSON file is accepted too (tests, runs by hand). The
record's shape is simrec.records.Lineage."""

from __future__ import annotations

import json
from pathlib import Path

from simrec.infra.errors import InputError
from simrec.records import Lineage, load_json, parse_record


def read_lineage(value: str | Path) -> Lineage:
    """The lineage from JSON text or a JSON file (whole numbers that came through protobuf's Struct as
    floats are ints again); InputError naming the source and the fields at fault otherwise."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        where, what = "--lineage", "an ingest lineage JSON"
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not {what} (JSONDecodeError: {exc})") from exc
    else:
        where, what = str(value), "an ingest lineage file"
        data = load_json(Path(value), what)
    return parse_record(Lineage, data, where, what)
