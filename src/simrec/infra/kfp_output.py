"""What a container step tells KFP beyond its output files: metadata of output artifacts (the scalar
values of a Metrics artifact, which the KFP UI shows), written to the executor output file named in the
executor input ({{$}}). KFP's launcher still reads output parameters from their files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic


def write_artifact_metadata(executor_input: str, metadata: dict[str, dict[str, Any]]) -> Path:
    """metadata: output artifact name -> its metadata; returns the executor output file written."""
    try:
        spec = json.loads(executor_input)
        outputs = spec["outputs"]
        path = Path(outputs["outputFile"])
        artifacts = {
            name: {"artifacts": [outputs["artifacts"][name]["artifacts"][0] | {"metadata": values}]}
            for name, values in metadata.items()
        }
    except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise InputError(f"not a KFP executor input with the outputs {sorted(metadata)}: {exc}") from exc
    write_json_atomic(path, {"artifacts": artifacts})
    return path
