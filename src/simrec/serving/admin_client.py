"""A client of a running `simrec serve`'s admin routes (deploy, rollback, live items), with its admin
token: what the deploy and refresh steps ask a server for. The server does the work; this reports its
answer, and a refusal (the serving version unchanged) or no answer as DeployError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from simrec.errors import InputError

DEPLOY_TIMEOUT_S = 600.0  # loading a large package and its smoke queries takes a while


class DeployError(InputError):
    """The server refused the request (the serving version is unchanged) or could not be reached."""


def call(method: str, url: str, token: str | None, body: Any = None, timeout: float = 30.0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.request(method, url, json=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise DeployError(f"no answer from {url}: {exc}") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:500]}
    if response.status_code >= 400:
        raise DeployError(f"{url} answered {response.status_code}: {answer.get('error', answer)}")
    return answer


def deploy(server_url: str, token: str | None, package_dir: Path, version: str) -> dict[str, Any]:
    """Makes the server serve `package_dir` as `version`; DeployError (old version still serving) if the
    package does not load or its smoke queries answer differently than when it was built."""
    body = {"package": str(Path(package_dir).resolve()), "version": version}
    return call("POST", f"{server_url.rstrip('/')}/admin/deploy", token, body, DEPLOY_TIMEOUT_S)


def rollback(server_url: str, token: str | None) -> dict[str, Any]:
    """Switches the server back to the version it served before the last deploy or rollback."""
    return call("POST", f"{server_url.rstrip('/')}/admin/rollback", token, timeout=60.0)
