"""The deploy step's `serve.kserve` settings (a JSON object) and the Endpoint they describe, with the
namespace a pod runs in when none is configured."""

from __future__ import annotations

import json
from pathlib import Path

from simrec.config import KServeConfig
from simrec.infra.errors import InputError, validation_problems
from simrec.kserve.manifest import Endpoint, Resources, default_image


def settings_from_json(text: str) -> KServeConfig:
    """serve.kserve as the deploy step receives it (a JSON object; absent fields take their defaults)."""
    from pydantic import ValidationError

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--kserve: not JSON ({exc})") from exc
    try:
        return KServeConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"--kserve: {validation_problems(exc.errors())}") from exc


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


def endpoint(settings: KServeConfig) -> Endpoint:
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
    )
