"""What an operator sees of each request: a request id (the client's X-Request-ID when it sent a usable
one, else a new one; echoed in the answer), a JSON access log line, and the request metrics. Plain ASGI
around everything else, so refusals by the guard (401, 413, ...) are seen too."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.routing import BaseRoute, Match

from simrec.serving.guard import ASGIApp, Message, Receive, Scope, Send
from simrec.serving.metrics import Metrics

access_log = logging.getLogger("simrec.access")
REQUEST_ID_HEADER = b"x-request-id"
# An id from outside goes into logs and headers: only short, plain ones are kept.
USABLE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
OTHER_ROUTE = "other"  # paths no route matches: one series, whatever a client sends


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's `fields` (extra={"fields": {...}}) become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}


class Observe:
    def __init__(
        self, app: ASGIApp, routes: Sequence[BaseRoute], metrics: Metrics | None, log_requests: bool
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.log_requests = log_requests
        # Refused requests repeat the same few paths (a shed burst: thousands a second), and matching
        # them against every route costs more than the rest of the refusal; a client's own paths cannot
        # grow the cache past its bound.
        self._template = functools.lru_cache(maxsize=512)(self._match)

    def _match(self, method: str, path: str) -> str:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        route = next((r for r in self.routes if r.matches(scope)[0] is Match.FULL), None)
        return getattr(route, "path", OTHER_ROUTE)

    def _route(self, scope: Scope) -> str:
        """The route template: set by the router when the request got that far, else matched here (a
        request refused before routing: the guard's, a shed one)."""
        route = scope.get("route")
        if route is not None:
            return route.path
        return self._template(scope["method"], scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        request_id = given.decode() if USABLE_ID.match(given) else uuid.uuid4().hex
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        except Exception:
            status = status or 500  # FastAPI's outermost layer turns it into the JSON 500 answer
            raise
        finally:
            if status:  # else the client left before any answer: nothing was served
                self._record(scope, request_id, status, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = self._route(scope)
        if self.metrics is not None:
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
        if self.log_requests:
            client = scope.get("client")
            fields = {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": client[0] if client else None,
            }
            access_log.info("request", extra={"fields": fields})
