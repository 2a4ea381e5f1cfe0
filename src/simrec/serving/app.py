"""The HTTP routes. Query routes are async: image queries are batched onto model threads (batcher.py);
item queries need no model and run inline. Admin routes, which load packages for seconds, are plain
`def` (FastAPI's thread pool), so queries keep being answered meanwhile. The admin routes exist only when
the server has an admin token (guard.py keeps the two planes' credentials apart)."""

from __future__ import annotations

import base64
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from simrec.infra.errors import InputError, validation_problems
from simrec.recommender.package import Neighbour, item_label
from simrec.serving import schemas as s
from simrec.serving.admission import Admission, Shed
from simrec.serving.batcher import Batcher
from simrec.serving.guard import Guard
from simrec.serving.inputs import (
    Query as ItemQuery,
)
from simrec.serving.inputs import (
    finite,
    k_parameter,
    pixels_from_base64,
    pixels_from_rows,
    png_from_base64,
    v2_query,
)
from simrec.serving.metrics import Metrics
from simrec.serving.observe import Observe
from simrec.serving.state import Refused, Served, ServingState

log = logging.getLogger(__name__)
PLATFORMS = {"onnx": "simrec-onnxruntime-faiss", "keras": "simrec-tensorflow-faiss"}  # by runtime
# Document the schemes in OpenAPI; the Guard middleware enforces them.
bearer = Security(
    HTTPBearer(auto_error=False, scheme_name="query token", description="SIMREC_SERVE_TOKEN of the server")
)
admin_bearer = Security(
    HTTPBearer(auto_error=False, scheme_name="admin token", description="SIMREC_ADMIN_TOKEN of the server")
)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}


@dataclass(frozen=True)
class Settings:
    """How one server runs (simrec serve's options)."""

    token: str | None  # the query plane's bearer token (None: queries need none)
    admin_token: str | None = None  # the admin plane's (None: no admin routes)
    max_body: int = 1 << 20
    max_admin_body: int = 64 << 20
    model_threads: int = 1
    model_thread_setup: Callable[[], None] | None = None
    latency_budget_s: float = 0.05
    max_in_flight: int | None = None  # a fixed bound on the queries in flight instead of the budget's
    metrics: bool = True
    access_log: bool = True


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _catalogue_item(items: pd.DataFrame, row: int) -> s.CatalogueItem:
    label, label_name = item_label(items["label"].iat[row], items["label_name"].iat[row])
    return s.CatalogueItem(
        item_id=str(items["item_id"].iat[row]),
        label=label,
        label_name=label_name,
        image=_b64(bytes(items["image"].iat[row])),
    )


async def _answer(batcher: Batcher, served: Served, query: ItemQuery, k: int) -> list[list[Neighbour]]:
    recommender = served.recommender
    if query.item_ids is not None:
        unknown = [item for item in query.item_ids if item not in recommender.rows.index]
        if unknown:
            raise HTTPException(404, f"unknown item_id {unknown[0]!r}")
        # No model call: a vector lookup and one search, quicker inline than a hop to a thread.
        return recommender.similar_to_items(query.item_ids, k)
    return await batcher.similar_to_pixels(recommender, query.pixels, k)


def create_app(state: ServingState, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="simrec: visually similar items",
        version="1",
        description="Top-k visually similar catalogue items for an image or a catalogue item. "
        "Friendly JSON routes, the Open Inference Protocol v2 (as KServe speaks it), and admin routes "
        'for deploy, rollback and live catalogue additions. Errors are JSON: {"error": message}. '
        "503 with Retry-After: no model loaded yet, or too many image queries waiting (retry later).",
        responses=ERRORS,
        # Swagger UI and ReDoc load their scripts from a CDN, on the origin where the page keeps its
        # token: off. /openapi.json describes the API for tools.
        docs_url=None,
        redoc_url=None,
    )
    page = (files("simrec.serving") / "page.html").read_text()
    metrics = Metrics(state) if settings.metrics else None
    batcher = Batcher(
        settings.model_threads,
        settings.model_thread_setup,
        on_batch=metrics.batch_size.observe if metrics else None,
    )
    admission = Admission(settings.model_threads, settings.latency_budget_s, settings.max_in_flight)
    if metrics:
        metrics.watch(batcher, admission)

    def serving() -> Served:
        current = state.current
        if current is None:
            raise HTTPException(503, "no model is loaded yet")
        return current

    def model(name: str) -> Served:
        if name != state.model_name:
            raise HTTPException(404, f"unknown model {name!r}; this server serves {state.model_name!r}")
        return serving()

    # --- errors: one JSON shape, never a traceback ---

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return _error(400, f"malformed JSON: {validation_problems(errors)}")
        return _error(422, validation_problems(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return _error(exc.status, exc.reason)

    # --- probes and the page (public) ---

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    if metrics:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus() -> Response:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> s.LiveResponse:
        return s.LiveResponse(live=True)

    @app.get("/v2/health/ready", tags=["v2"], responses={503: {"model": s.ReadyResponse}})
    async def ready() -> Any:
        if state.current is None:
            return JSONResponse({"ready": False}, status_code=503)
        return s.ReadyResponse(ready=True)

    # --- Open Inference Protocol v2 ---

    @app.get("/v2", tags=["v2"], dependencies=[bearer])
    async def server_metadata() -> s.ServerMetadataResponse:
        return s.ServerMetadataResponse(name="simrec", version="1", extensions=[])

    @app.get("/v2/models/{model_name}", tags=["v2"], dependencies=[bearer])
    async def model_metadata(model_name: str) -> s.ModelMetadataResponse:
        served = model(model_name)
        tensor = s.MetadataTensor
        return s.ModelMetadataResponse(
            name=model_name,
            versions=[served.version],
            platform=PLATFORMS[state.runtime],
            inputs=[
                tensor(name="image", datatype="BYTES", shape=[-1]),
                tensor(name="item_id", datatype="BYTES", shape=[-1]),
                tensor(name="pixels", datatype="UINT8", shape=[-1, 28, 28]),
            ],
            outputs=[
                tensor(name="item_id", datatype="BYTES", shape=[-1, -1]),
                tensor(name="label", datatype="INT32", shape=[-1, -1]),
                tensor(name="label_name", datatype="BYTES", shape=[-1, -1]),
                tensor(name="score", datatype="FP32", shape=[-1, -1]),
            ],
        )

    @app.get("/v2/models/{model_name}/ready", tags=["v2"], dependencies=[bearer])
    async def model_ready(model_name: str) -> s.ModelReadyResponse:
        model(model_name)
        return s.ModelReadyResponse(name=model_name, ready=True)

    @app.post(
        "/v2/models/{model_name}/infer", tags=["v2"], dependencies=[bearer], response_model_exclude_none=True
    )
    async def infer(model_name: str, request: s.InferenceRequest) -> s.InferenceResponse:
        served = model(model_name)
        k = k_parameter(request.parameters)
        wanted = [output.name for output in request.outputs or []]
        unknown = sorted(set(wanted) - {"item_id", "label", "label_name", "score"})
        if unknown:
            raise InputError(f"unknown output {unknown[0]!r}; outputs are item_id, label, label_name, score")
        answers = await _answer(batcher, served, v2_query(request.inputs[0]), k)
        width = min(len(row) for row in answers)
        rows = [row[:width] for row in answers]
        shape = [len(rows), width]
        columns = {
            "item_id": ("BYTES", [n.item_id for row in rows for n in row]),
            # A typed tensor has no null: an unlabelled item is label -1 with an empty label_name.
            "label": ("INT32", [-1 if n.label is None else n.label for row in rows for n in row]),
            "label_name": ("BYTES", [n.label_name or "" for row in rows for n in row]),
            "score": ("FP32", [finite(n.score) for row in rows for n in row]),
        }
        return s.InferenceResponse(
            model_name=model_name,
            model_version=served.version,
            id=request.id or str(uuid.uuid4()),
            parameters={"index_version": served.index_version},
            outputs=[
                s.ResponseOutput(name=name, shape=shape, datatype=datatype, data=data)
                for name, (datatype, data) in columns.items()
                if not wanted or name in wanted
            ],
        )

    # --- friendly JSON routes (the web page) ---

    # exclude_unset, not exclude_none: an unlabelled item's null label is sent; an image only when asked.
    @app.post("/similar", tags=["similar"], dependencies=[bearer], response_model_exclude_unset=True)
    async def similar(request: s.SimilarRequest) -> s.SimilarResponse:
        served = serving()
        if request.item_id is not None:
            query = ItemQuery(item_ids=[request.item_id])
        elif request.image is not None:
            query = ItemQuery(pixels=pixels_from_base64(request.image)[None])
        else:
            query = ItemQuery(pixels=pixels_from_rows(request.pixels)[None])
        recommender = served.recommender
        items = [
            s.SimilarItem(
                item_id=n.item_id,
                label=n.label,
                label_name=n.label_name,
                score=finite(n.score),
                **({"image": _b64(recommender.image(n.item_id))} if request.include_images else {}),
            )
            for n in (await _answer(batcher, served, query, request.k))[0]
        ]
        return s.SimilarResponse(
            model_name=state.model_name,
            model_version=served.version,
            index_version=served.index_version,
            items=items,
        )

    @app.get("/items/sample", tags=["similar"], dependencies=[bearer])
    def sample(
        n: Annotated[int, Query(ge=1, le=100)] = 24, seed: Annotated[int | None, Query()] = None
    ) -> s.SampleResponse:
        """Random catalogue items with their images (the page's picking grid)."""
        served = serving()
        items = served.recommender.items
        rows = random.Random(seed).sample(range(len(items)), min(n, len(items)))
        return s.SampleResponse(
            model_version=served.version,
            index_version=served.index_version,
            catalogue_size=len(items),
            items=[_catalogue_item(items, r) for r in rows],
        )

    @app.get(
        "/items/{item_id}/image",
        tags=["similar"],
        dependencies=[bearer],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def item_image(item_id: str) -> Response:
        recommender = serving().recommender
        if item_id not in recommender.rows.index:
            raise HTTPException(404, f"unknown item_id {item_id!r}")
        return Response(recommender.image(item_id), media_type="image/png")

    if settings.admin_token:
        _admin_routes(app, state, serving, metrics)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}")

    app.add_middleware(Shed, admission=admission, on_shed=metrics.shed.inc if metrics else None)
    app.add_middleware(
        Guard,
        token=settings.token,
        admin_token=settings.admin_token,
        max_body=settings.max_body,
        max_admin_body=settings.max_admin_body,
    )
    # added last: outermost, so it sees the guard's refusals too
    app.add_middleware(Observe, routes=app.routes, metrics=metrics, log_requests=settings.access_log)
    return app


def _admin_routes(
    app: FastAPI, state: ServingState, serving: Callable[[], Served], metrics: Metrics | None
) -> None:
    """What the deploy step and `simrec refresh` drive."""

    @app.post("/admin/deploy", tags=["admin"], dependencies=[admin_bearer])
    def deploy(request: s.DeployRequest) -> dict[str, Any]:
        """Load a package from the server's package root (relative to it, or an absolute path under it)
        beside the serving version, check it, then switch."""
        return state.swap_in(str(state.package_in_root(request.package)), request.version)

    @app.post("/admin/rollback", tags=["admin"], dependencies=[admin_bearer])
    def rollback() -> dict[str, Any]:
        return state.swap_back()

    @app.get("/admin/status", tags=["admin"], dependencies=[admin_bearer])
    async def status() -> dict[str, Any]:
        return state.status()

    @app.get("/admin/items", tags=["admin"], dependencies=[admin_bearer])
    def item_ids() -> s.ItemIdsResponse:
        served = serving()
        ids = served.recommender.items["item_id"].tolist()
        return s.ItemIdsResponse(index_version=served.index_version, item_ids=ids)

    @app.post("/admin/items", tags=["admin"], dependencies=[admin_bearer])
    def add_items(request: s.AddItemsRequest) -> s.AddItemsResponse:
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
