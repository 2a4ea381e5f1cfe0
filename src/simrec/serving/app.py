"""The server as one FastAPI app: the routers (routes/, one per concern), one JSON shape for every error,
and the middleware around them (load shedding, the two planes' credentials, observation). Query routes
are async: image queries are batched onto model threads (batcher.py); item queries need no model and run
inline. The admin routes exist only when the server has an admin token (guard.py keeps the two planes'
credentials apart)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from simrec.infra.errors import InputError, validation_problems
from simrec.retrieval.engine import VectorEngineError
from simrec.serving import schemas as s
from simrec.serving.admission import Admission, Shed
from simrec.serving.batcher import Batcher
from simrec.serving.guard import Guard
from simrec.serving.metrics import Metrics
from simrec.serving.observe import Observe
from simrec.serving.routes import admin, observability, oip, similar
from simrec.serving.state import Refused, ServingState

log = logging.getLogger(__name__)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}
DESCRIPTION = (
    "Top-k visually similar catalogue items for an image or a catalogue item. "
    "Friendly JSON routes, the Open Inference Protocol v2 (as KServe speaks it), and admin routes "
    'for deploy, rollback and live catalogue additions. Errors are JSON: {"error": message}. '
    "503 with Retry-After: no model loaded yet, or too many image queries waiting (retry later); "
    "503: the vector engine the served version searches cannot be reached."
)


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


def create_app(state: ServingState, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="simrec: visually similar items",
        version="1",
        description=DESCRIPTION,
        responses=ERRORS,
        # Swagger UI and ReDoc load their scripts from a CDN, on the origin where the page keeps its
        # token: off. /openapi.json describes the API for tools.
        docs_url=None,
        redoc_url=None,
    )
    metrics = Metrics(state) if settings.metrics else None
    batcher = Batcher(
        settings.model_threads,
        settings.model_thread_setup,
        on_batch=metrics.batch_size.observe if metrics else None,
    )
    admission = Admission(settings.model_threads, settings.latency_budget_s, settings.max_in_flight)
    if metrics:
        metrics.watch(batcher, admission)
    # What the routes reach through routes.context's dependencies.
    app.state.serving_state = state
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.page = (files("simrec.serving") / "page.html").read_text()
    _add_error_handlers(app)
    _include_routers(app, settings)
    _add_middleware(app, settings, admission, metrics)
    return app


def _include_routers(app: FastAPI, settings: Settings) -> None:
    # Each request is matched against the routes in this order until one fits (no two paths overlap, so
    # the order changes nothing else): the query routers first, as nearly every request is a query.
    app.include_router(similar.router)
    app.include_router(oip.router)
    app.include_router(similar.page)
    if settings.metrics:
        app.include_router(observability.router)
    if settings.admin_token:
        app.include_router(admin.router)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """One JSON shape for every error, never a traceback."""

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

    @app.exception_handler(VectorEngineError)
    async def engine_failed(_: Request, exc: VectorEngineError) -> JSONResponse:
        # the served version is unchanged and answers again as soon as its engine does
        log.warning("query failed: %s", exc)
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}")


def _add_middleware(app: FastAPI, settings: Settings, admission: Admission, metrics: Metrics | None) -> None:
    app.add_middleware(Shed, admission=admission, on_shed=metrics.shed.inc if metrics else None)
    app.add_middleware(
        Guard,
        token=settings.token,
        admin_token=settings.admin_token,
        max_body=settings.max_body,
        max_admin_body=settings.max_admin_body,
    )
    # Observe matches requests refused before routing against the routes themselves: FastAPI lists an
    # included router in app.routes as one entry without a path template, so it gets the routes inside.
    routes = [context.original_route for context in iter_route_contexts(app.routes)]
    # added last: outermost, so it sees the guard's refusals too
    app.add_middleware(Observe, routes=routes, metrics=metrics, log_requests=settings.access_log)
