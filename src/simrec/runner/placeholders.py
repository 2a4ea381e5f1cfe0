"""A task's command line as KFP's launcher builds it: plain string substitution, nothing more.

Written from backend/src/v2/component/launcher_v2.go (executeV2 and getPlaceholders, the same from 2.4.1
to 2.17.0) in kubeflow/pipelines: each placeholder the executor input defines is replaced wherever it
appears inside an argument; structured placeholders (IfPresent, Concat) are not expanded, and a
placeholder with no value stays as literal text. Parameter values are formatted as Go formats them there:
numbers with strconv.FormatFloat(v, 'f', -1, 64) (8080, 0.5, 0.00001, never 1.0 or 1e-05), booleans as
true/false, lists and structs as protobuf JSON (whole numbers without a fraction). kfp.local is more
forgiving (it expands IfPresent and Concat and formats values the Python way), so an embedded run that
used it could pass where the cluster fails."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def go_number(value: float) -> str:
    """strconv.FormatFloat(value, 'f', -1, 64): the shortest digits that read back, never an exponent."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _protobuf_value(value: Any) -> Any:
    """A value as google.protobuf.Value holds it, so JSON shows what protojson writes: every number is a
    double, and one with no fraction is written without one."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, dict):
        return {key: _protobuf_value(item) for key, item in value.items()}
    return [_protobuf_value(item) for item in value]


def parameter_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_number(value)
    return json.dumps(_protobuf_value(value), separators=(",", ":"))


def launcher_placeholders(executor_input: dict[str, Any]) -> dict[str, str]:
    """Placeholder -> replacement, for the placeholders the launcher defines. Artifact URIs are local
    paths here, so an artifact's path is its URI (the launcher maps s3:// and gs:// to /s3/, /gcs/)."""
    inputs, outputs = executor_input.get("inputs", {}), executor_input.get("outputs", {})
    placeholders = {"{{$}}": json.dumps(executor_input)}
    for name, artifacts in inputs.get("artifacts", {}).items():
        if artifacts.get("artifacts"):
            uri = artifacts["artifacts"][0]["uri"]
            placeholders[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = uri
            placeholders[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = uri
    for name, artifacts in outputs.get("artifacts", {}).items():
        if artifacts.get("artifacts"):
            uri = artifacts["artifacts"][0]["uri"]
            placeholders[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = uri
            placeholders[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = uri
    for name, value in inputs.get("parameterValues", {}).items():
        placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = parameter_text(value)
    for name, parameter in outputs.get("parameters", {}).items():
        placeholders[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = parameter["outputFile"]
    return placeholders


def substitute(arguments: list[str], executor_input: dict[str, Any]) -> list[str]:
    placeholders = launcher_placeholders(executor_input)
    substituted = []
    for argument in arguments:
        for placeholder, replacement in placeholders.items():
            argument = argument.replace(placeholder, replacement)
        substituted.append(argument)
    return substituted
