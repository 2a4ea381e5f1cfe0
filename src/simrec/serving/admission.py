"""Load shedding: a bound on the query requests in flight, so that under a burst the server answers 503
with Retry-After at once (the client, or KServe's activator, retries later or elsewhere) instead of
letting every request wait ever longer.

What is bounded is every query that may need the model (POST /similar and v2 infer), from the moment its
body has been read to the end of its answer: parsing, decoding, waiting for a model thread, embedding,
searching and writing the answer. (A bound on the model threads' queue alone did not hold latency: at
64 clients on 2 cores the accepted requests' p99 was 326 ms with that queue at most 38 images, the time
being spent on the event loop, parsing and answering them.)

The bound follows from a latency budget by Little's law: requests in flight = throughput x latency, so
at most `throughput x budget` requests may be in flight for each to be answered within the budget. The
throughput is estimated from the requests themselves (in flight / latency, a moving average), so the
bound follows the model, the catalogue and the machine; it is never below the model threads' count."""

from __future__ import annotations

import time
from collections.abc import Callable

from simrec.serving.guard import ASGIApp, Receive, Scope, Send, reply

FIRST_RATE = 500.0  # requests/s assumed until measured: one client's rate on the benchmark machine
SMOOTHING = 0.05  # weight of the newest request in the moving average of the throughput
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
        self._rate = FIRST_RATE

    @property
    def limit(self) -> int:
        if self._fixed is not None:
            return self._fixed
        return max(self._floor, int(self._rate * self._budget_s))

    def admit(self) -> int | None:
        """The requests in flight with this one, or None: shed it."""
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return self.in_flight

    def done(self, in_flight: int, seconds: float) -> None:
        """A request admitted with `in_flight` requests in flight took `seconds`."""
        self.in_flight -= 1
        self._rate += SMOOTHING * (in_flight / max(seconds, 1e-4) - self._rate)


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
        in_flight = self.admission.admit()
        if in_flight is None:
            if self.on_shed is not None:
                self.on_shed()
            message = f"overloaded: {self.admission.limit} requests already in flight; retry shortly"
            await reply(send, 503, message, [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.done(in_flight, time.perf_counter() - started)
