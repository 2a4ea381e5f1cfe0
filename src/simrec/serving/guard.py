"""Checks every request passes before any route code runs, in this order: the plane's credential (404 when
the admin plane is off, 401, 403), body size (413), content type (415). Plain ASGI rather than FastAPI
dependencies, because FastAPI parses the body before dependencies run: an unauthenticated client must get
401, not a JSON error about its body.

Two planes, two credentials: the query token opens the query routes only, the admin token the routes
under /admin/ only. Either token on the other plane is refused with 403, so the admin token cannot end up
in the web page (which keeps the token it is given) and a client that may query cannot deploy."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Reachable without a token: probes (kubelet has no token), the page shell (it asks for the token), the
# API description and the metrics (Prometheus scrapes without credentials on KServe's annotations).
PUBLIC_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/metrics"})
ADMIN_PREFIX = "/admin/"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Read (and dropped) past the limit before answering 413: closing a connection with unread request bytes
# makes the kernel reset it, and a client still sending then sees the reset instead of the 413.
DRAIN_BYTES = 8 << 20


async def reply(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _bearer(token: str | None) -> bytes | None:
    return f"Bearer {token}".encode() if token else None


def _matches(given: bytes, expected: bytes | None) -> bool:
    return expected is not None and hmac.compare_digest(given, expected)


async def _drain(receive: Receive, more: bool, budget: int) -> None:
    """Reads and drops the rest of a refused body, up to `budget` bytes."""
    while more and budget > 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        budget -= len(message.get("body", b""))
        more = message.get("more_body", False)


class Guard:
    """token: the query plane's (None: queries need none). admin_token: the admin plane's (None: the
    admin routes are off and answer 404)."""

    def __init__(
        self, app: ASGIApp, token: str | None, admin_token: str | None, max_body: int, max_admin_body: int
    ) -> None:
        self.app = app
        self.query = _bearer(token)
        self.admin = _bearer(admin_token)
        self.max_body = max_body
        self.max_admin_body = max_admin_body

    async def _refused(self, path: str, given: bytes, send: Send) -> bool:
        """Answers and returns True when the credential does not open the plane `path` is on."""
        if path.startswith(ADMIN_PREFIX):
            if self.admin is None:
                await reply(send, 404, "not found: the admin routes are off on this server")
                return True
            expected, other, other_name = self.admin, self.query, "query"
        elif self.query is None or path in PUBLIC_PATHS:
            return False
        else:
            expected, other, other_name = self.query, self.admin, "admin"
        if _matches(given, expected):
            return False
        if _matches(given, other):
            plane = "the query routes" if other_name == "admin" else "the admin routes"
            await reply(send, 403, f"the {other_name} token does not open {plane}")
            return True
        reason = "missing bearer token" if not given else "wrong bearer token"
        await reply(send, 401, f"{reason}: send 'Authorization: Bearer <token>'",
                     [(b"www-authenticate", b"Bearer")])  # fmt: skip
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])  # lower-case names; a repeated header keeps its last value
        if await self._refused(path, headers.get(b"authorization", b""), send):
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_admin_body if path.startswith(ADMIN_PREFIX) else self.max_body
        too_large = f"request body over the {limit}-byte limit"
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _drain(receive, True, DRAIN_BYTES if declared.isdigit() else 0)
            await reply(send, 413, too_large)
            return
        # Read the whole (bounded) body here, so a client that streams more than it declared, or sends
        # chunked, is stopped at the limit too; the route then reads it from memory.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                await _drain(receive, more, DRAIN_BYTES)
                await reply(send, 413, too_large)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and content_type != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            await reply(send, 415, f"content type must be application/json, got {shown}")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
