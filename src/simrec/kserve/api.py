"""The Kubernetes API as the KServe rollout uses it: get / create / replace / merge-patch of
InferenceServices with the `kubernetes` client (the pod's service account in a cluster, a kubeconfig
elsewhere), its refusals as one-line errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from simrec.infra.errors import InputError
from simrec.kserve.manifest import GROUP, PLURAL, VERSION

CANARY = "canaryTrafficPercent"


class InferenceServices:
    """get / create / replace / merge-patch of InferenceServices through the Kubernetes API."""

    def __init__(self, api: Any | None = None) -> None:
        self.api = api or connect()

    def _call(self, what: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(group=GROUP, version=VERSION, plural=PLURAL, **kwargs)
        except ApiException as exc:
            raise ApiError(what, exc.status, _api_message(exc)) from exc
        except HTTPError as exc:
            raise InputError(f"{what}: the Kubernetes API does not answer ({exc})") from exc

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                f"read {namespace}/{name}",
                self.api.get_namespaced_custom_object,
                namespace=namespace,
                name=name,
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self._call(
            f"create {meta['namespace']}/{meta['name']}",
            self.api.create_namespaced_custom_object,
            namespace=meta["namespace"],
            body=manifest,
        )

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self._call(
            f"update {meta['namespace']}/{meta['name']}",
            self.api.replace_namespaced_custom_object,
            namespace=meta["namespace"],
            name=meta["name"],
            body=manifest,
        )

    def set_canary(self, namespace: str, name: str, percent: int | None) -> dict[str, Any]:
        """A JSON merge patch of the one field (None removes it: the latest ready revision gets 100%)."""
        return self._call(
            f"patch {namespace}/{name}",
            self.api.patch_namespaced_custom_object,
            namespace=namespace,
            name=name,
            body={"spec": {"predictor": {CANARY: percent}}},
        )


class ApiError(InputError):
    def __init__(self, what: str, status: int, message: str) -> None:
        hint = " (the service account needs get/create/update/patch on inferenceservices)" * (status == 403)
        super().__init__(f"{what}: the Kubernetes API answered {status}: {message}{hint}")
        self.status = status


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def connect() -> Any:
    """A CustomObjectsApi: the pod's service account inside a cluster, else the kubeconfig
    ($KUBECONFIG or ~/.kube/config, current context)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # $KUBECONFIG read now: the client reads it once, when it is imported
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
        except (config.ConfigException, OSError) as exc:
            raise InputError(f"no Kubernetes access (not in a pod, and no usable kubeconfig): {exc}") from exc
    return client.CustomObjectsApi()
