"""Load shedding: a bound on the query requests in flight, so that under a burst the server answers 503
with Retry-After at once (the client, or KServe's activator, retries later or elsewhere) instead of
letting every request wait ever longer.

What is bounded is every query that may need the model (POST /similar and v2 infer), from the moment its
body has been read to the end of its answer: parsing, decoding, waiting for a model thread, embedding,
searching and writing the answer. (A bound on the model threads' queue alone did not hold latency: at
64 clients on 2 cores the accepted requests' p99 was 326 ms with that queue at most 38 images, the time
being spent on the event loop, parsing and answering them.)

The bound follows from a latency budget, found the way TCP finds a window (additive increase,
multiplicative decrease; Netflix's concurrency-limits calls it AIMD): while answers come within the
budget and the bound is in use (at least half of it in flight), it grows by one per bound's worth of
answers; an answer over the budget shrinks it by a tenth, at most once per bound's worth of answers (a
burst of slow answers is one signal, not many), never below the model threads' count. It starts at
what Little's law gives for one client's rate on the benchmark machine (500 req/s x budget). So the bound
settles where the answers take about the budget, whatever slows them: the model, the catalogue, the
machine, or a storm of clients retrying at once, whose refusals take the event loop's time too (a bound
estimated from in flight / latency shrank to the floor in such a storm, as its latency did not come from
the requests in flight)."""

from __future__ import annotations

import time
from collections.abc import Callable

from simrec.serving.guard import ASGIApp, Receive, Scope, Send, reply

FIRST_RATE = 500.0  # requests/s that set the first bound: one client's rate on the benchmark machine
BACKOFF = 0.9  # what an answer over the budget leaves of the bound
RETRY_AFTER_S = 1  # what a shed request is told to wait: past a burst, the budget drains in far less


def _may_need_the_model(scope: Scope) -> bool:
    path: str = scope["path"]
    return scope["method"] == "POST" and (
        path == "/similar" or (path.startswith("/v2/models/") and path.endswith("/infer"))
    )


class Admission:
    """max_in_flight: a fixed bound instead of the budget's."""

    def __init__(self, model_threads: int, latency_budget_s: float, max_in_flight: int | None = None) -> None:
        self.in_flight = 0
        self._floor = model_threads
        self._budget_s = latency_budget_s
        self._fixed = max_in_flight
        self._bound = max(float(model_threads), FIRST_RATE * latency_budget_s)
        self._since_backoff = 0  # answers since the bound last shrank

    @property
    def limit(self) -> int:
        return self._fixed if self._fixed is not None else int(self._bound)

    def admit(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def done(self, seconds: float) -> None:
        """An admitted request was answered in `seconds`."""
        in_use = 2 * self.in_flight >= self._bound
        self.in_flight -= 1
        self._since_backoff += 1
        if seconds > self._budget_s:
            if self._since_backoff >= self._bound:
                self._bound = max(self._floor, self._bound * BACKOFF)
                self._since_backoff = 0
        elif in_use:
            self._bound += 1 / self._bound


class Shed:
    """ASGI: admits the queries that may need the model, or answers 503 + Retry-After. Runs after the
    guard, so refused credentials take no place and the body has been read (the connection stays open)."""

    def __init__(self, app: ASGIApp, admission: Admission, on_shed: Callable[[], None] | None) -> None:
        self.app = app
        self.admission = admission
        self.on_shed = on_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_need_the_model(scope):
            await self.app(scope, receive, send)
            return
        if not self.admission.admit():
            if self.on_shed is not None:
                self.on_shed()
            message = f"overloaded: {self.admission.limit} requests already in flight; retry shortly"
            await reply(send, 503, message, [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.done(time.perf_counter() - started)
