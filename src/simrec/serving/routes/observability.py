"""Prometheus' scrape of the server's metrics (public, like the probes; included only when the server
keeps metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from simrec.serving.routes.context import MetricsDep

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def prometheus(metrics: MetricsDep) -> Response:
    assert metrics is not None  # the router is included only with metrics on
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
