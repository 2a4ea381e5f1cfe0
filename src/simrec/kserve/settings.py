"""The deploy step's `serve.kserve` settings and the profile's `evaluate.vector_engine` (JSON objects), and
the Endpoint they describe, with the namespace a pod runs in when none is configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from simrec.config import KServeConfig, VectorEngineConfig
from simrec.infra.errors import InputError, validation_problems
from simrec.kserve.manifest import Endpoint, Resources, VectorEngineAccess, default_image

Section = TypeVar("Section", KServeConfig, VectorEngineConfig)


def _from_json(section: type[Section], text: str, flag: str) -> Section:
    """A configuration section as the deploy step receives it: a JSON object, validated as the profile's
    (absent fields take their defaults)."""
    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{flag}: not JSON ({exc})") from exc
    try:
        return section.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{flag}: {validation_problems(exc.errors())}") from exc


def settings_from_json(text: str) -> KServeConfig:
    """serve.kserve, as deploy's --kserve."""
    return _from_json(KServeConfig, text, "--kserve")


def vector_engine_from_json(text: str) -> VectorEngineConfig:
    """evaluate.vector_engine, as deploy's --vector-engine."""
    return _from_json(VectorEngineConfig, text, "--vector-engine")


# Where Kubernetes tells a pod its namespace (every pod with a service account token has it).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def namespace(settings: KServeConfig) -> str:
    """The InferenceService's namespace: the configured one, else the namespace this pod runs in."""
    if settings.namespace:
        return settings.namespace
    try:
        return POD_NAMESPACE_FILE.read_text().strip()
    except OSError as exc:
        raise InputError(
            f"serve.kserve.namespace is not set and this is not a pod ({POD_NAMESPACE_FILE} is not readable):"
            " give the InferenceService's namespace"
        ) from exc


def endpoint(settings: KServeConfig, vector_engine: VectorEngineConfig | None = None) -> Endpoint:
    """The InferenceService `settings` describe; its predictor reaches `vector_engine` (the profile's
    evaluate.vector_engine) at its URI with its token Secret, if given."""
    from simrec import __version__

    return Endpoint(
        name=settings.name,
        namespace=namespace(settings),
        image=settings.image or default_image(__version__),
        token_secret=settings.token_secret,
        service_account=settings.service_account,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        resources=Resources(**settings.resources.model_dump()),
        vector_engine=VectorEngineAccess(vector_engine.uri, vector_engine.token_secret)
        if vector_engine
        else None,
    )
