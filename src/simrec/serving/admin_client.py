"""A client of a running `simrec serve`'s admin routes (deploy, rollback, live items), with its admin
token: what the deploy and refresh steps ask a server for. The server does the work; this reports its
answer, and a refusal (the serving version unchanged) or no answer as DeployError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import requests

from simrec.data.codec import png_base64
from simrec.infra.errors import InputError
from simrec.recommender.package import item_label

DEPLOY_TIMEOUT_S = 600.0  # loading a large package and its smoke queries takes a while
ITEMS_PER_REQUEST = 500  # ~0.7 MB of base64 PNGs


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


def add_missing_items(server_url: str, token: str | None, items: pd.DataFrame) -> dict[str, Any]:
    """Sends the server the rows of `items` (item_id, label, label_name, image PNG bytes) it does not
    hold yet, in batches; it embeds them with its serving model into a new index version."""
    url = server_url.rstrip("/")
    known = set(call("GET", f"{url}/admin/items", token, timeout=60.0)["item_ids"])
    missing = items[~items["item_id"].isin(known)]
    result: dict[str, Any] = {"catalogue": len(items), "sent": len(missing), "added": 0}
    for start in range(0, len(missing), ITEMS_PER_REQUEST):
        batch = missing.iloc[start : start + ITEMS_PER_REQUEST]
        body = {"items": [new_item(row) for row in batch.itertuples(index=False)]}
        answer = call("POST", f"{url}/admin/items", token, body, timeout=600.0)
        result |= {
            "added": result["added"] + answer["added"],
            "index_version": answer["index_version"],
            "served_items": answer["catalogue_size"],
        }
    return result


def new_item(row: Any) -> dict[str, Any]:
    """One items row as the body of /admin/items expects it (labels null for an unlabelled item)."""
    label, label_name = item_label(row.label, row.label_name)
    return {
        "item_id": row.item_id,
        "label": label,
        "label_name": label_name,
        "image": png_base64(row.image),
    }
