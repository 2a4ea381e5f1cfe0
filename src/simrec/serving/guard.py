"""Checks every request passes before any route code runs, in this order: bearer token (401), body size
(413), content type (415). Plain ASGI rather than FastAPI dependencies, because FastAPI parses the body
before dependencies run: an unauthenticated client must get 401, not a JSON error about its body."""

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

# Reachable without a token: probes (kubelet has no token), the page shell (it asks for the token) and
# the API description.
PUBLIC_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _reply(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
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


class Guard:
    def __init__(self, app: ASGIApp, token: str | None, max_body: int, max_admin_body: int) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body = max_body
        self.max_admin_body = max_admin_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])  # lower-case names; a repeated header keeps its last value
        if self.expected and path not in PUBLIC_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                reason = "missing bearer token" if not given else "wrong bearer token"
                await _reply(send, 401, f"{reason}: send 'Authorization: Bearer <token>'",
                             [(b"www-authenticate", b"Bearer")])  # fmt: skip
                return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_admin_body if path.startswith("/admin/") else self.max_body
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reply(send, 413, f"request body over the {limit}-byte limit")
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
            if size > limit:
                await _reply(send, 413, f"request body over the {limit}-byte limit")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and content_type != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            await _reply(send, 415, f"content type must be application/json, got {shown}")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
