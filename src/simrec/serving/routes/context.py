"""What routes share: the server's objects, as dependencies reading `app.state` (set by create_app), the
OpenAPI security schemes, and the lookups every query route makes.

The lookups that refuse (no model yet: 503; unknown model: 404) are called in the route bodies, not run
as dependencies: FastAPI runs dependencies before it validates the body, and a malformed request is
answered 422 whether or not a model is loaded."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from simrec.recommender.package import Neighbour
from simrec.retrieval.catalogue_index import InProcessIndex
from simrec.serving.batcher import Batcher
from simrec.serving.inputs import Query as ItemQuery
from simrec.serving.metrics import Metrics
from simrec.serving.state import Served, ServingState

# Document the schemes in OpenAPI; the Guard middleware enforces them.
bearer = Security(
    HTTPBearer(auto_error=False, scheme_name="query token", description="SIMREC_SERVE_TOKEN of the server")
)
admin_bearer = Security(
    HTTPBearer(auto_error=False, scheme_name="admin token", description="SIMREC_ADMIN_TOKEN of the server")
)


# async: a plain `def` dependency would cost every query a hop to FastAPI's thread pool.
async def _serving_state(request: Request) -> ServingState:
    return request.app.state.serving_state


async def _batcher(request: Request) -> Batcher:
    return request.app.state.batcher


async def _metrics(request: Request) -> Metrics | None:
    return request.app.state.metrics


async def _page(request: Request) -> str:
    return request.app.state.page


StateDep = Annotated[ServingState, Depends(_serving_state)]
BatcherDep = Annotated[Batcher, Depends(_batcher)]
MetricsDep = Annotated[Metrics | None, Depends(_metrics)]
PageDep = Annotated[str, Depends(_page)]


def serving(state: ServingState) -> Served:
    current = state.current
    if current is None:
        raise HTTPException(503, "no model is loaded yet")
    return current


def model(state: ServingState, name: str) -> Served:
    if name != state.model_name:
        raise HTTPException(404, f"unknown model {name!r}; this server serves {state.model_name!r}")
    return serving(state)


async def answer(batcher: Batcher, served: Served, query: ItemQuery, k: int) -> list[list[Neighbour]]:
    recommender = served.recommender
    if query.item_ids is not None:
        unknown = [item for item in query.item_ids if item not in recommender.rows.index]
        if unknown:
            raise HTTPException(404, f"unknown item_id {unknown[0]!r}")
        if isinstance(recommender.index, InProcessIndex):
            # No model call: a vector lookup and one search, quicker inline than a hop to a thread.
            return recommender.similar_to_items(query.item_ids, k)
        # A vector engine's are calls over the network: in a thread, the event loop answers on meanwhile.
        return await run_in_threadpool(recommender.similar_to_items, query.item_ids, k)
    return await batcher.similar_to_pixels(recommender, query.pixels, k)
