"""The admin plane (admin token), what the deploy step and `simrec refresh` drive: deploy and roll back
packages, the serving status, the catalogue's item ids and live additions to it. Its routes load packages
for seconds, so most are plain `def` (FastAPI's thread pool) and queries keep being answered meanwhile.
create_app includes this router only when the server has an admin token."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi import APIRouter

from simrec.serving import schemas as s
from simrec.serving.inputs import png_from_base64
from simrec.serving.routes.context import MetricsDep, StateDep, admin_bearer, serving

router = APIRouter(tags=["admin"], dependencies=[admin_bearer])


@router.post("/admin/deploy")
def deploy(request: s.DeployRequest, state: StateDep) -> dict[str, Any]:
    """Load a package from the server's package root (relative to it, or an absolute path under it)
    beside the serving version, check it, then switch."""
    return state.swap_in(str(state.package_in_root(request.package)), request.version)


@router.post("/admin/rollback")
def rollback(state: StateDep) -> dict[str, Any]:
    return state.swap_back()


@router.get("/admin/status")
async def status(state: StateDep) -> dict[str, Any]:
    return state.status()


@router.get("/admin/items")
def item_ids(state: StateDep) -> s.ItemIdsResponse:
    served = serving(state)
    ids = served.recommender.items["item_id"].tolist()
    return s.ItemIdsResponse(index_version=served.index_version, item_ids=ids)


@router.post("/admin/items")
def add_items(request: s.AddItemsRequest, state: StateDep, metrics: MetricsDep) -> s.AddItemsResponse:
    items = pd.DataFrame(
        {
            "item_id": [item.item_id for item in request.items],
            "label": [item.label for item in request.items],
            "label_name": [item.label_name for item in request.items],
            "image": [png_from_base64(item.image, f"item {item.item_id!r}") for item in request.items],
        }
    )
    result = state.add_items(items)
    if metrics:
        metrics.added.inc(result["added"])
    return s.AddItemsResponse(
        added=result["added"],
        skipped=result["skipped"],
        index_version=result["serving"]["index_version"],
        catalogue_size=result["serving"]["items"],
    )
