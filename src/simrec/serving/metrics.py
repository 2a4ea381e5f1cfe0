"""Prometheus metrics of one server (prometheus-client), served at /metrics in the text format.

Request counts and latencies are recorded per route template (`/v2/models/{model_name}/infer`), never per
raw path, so a client cannot grow the series without bound. What describes the served model (version,
index version and size, readiness) and the queue is read from the server's state when Prometheus scrapes,
so it costs requests nothing and is never stale."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from simrec.serving.admission import Admission
from simrec.serving.batcher import Batcher
from simrec.serving.state import ServingState

# Seconds: fine steps around the benchmark's few-ms answers and the 15 ms p99 target, then coarse ones
# up to the seconds a deploy takes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Served(Collector):
    """The served model and index, read from the state at each scrape."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        current = self.state.current
        ready = GaugeMetricFamily("simrec_ready", "1 when a model is loaded and answering, else 0")
        ready.add_metric([], 1 if current else 0)
        yield ready
        if current is None:
            return
        info = InfoMetricFamily("simrec_model", "the model version answering queries")
        info.add_metric(
            [],
            {
                "model_name": self.state.model_name,
                "version": current.version,
                "model_id": str(current.recommender.manifest["model_id"]),
            },
        )
        yield info
        yield GaugeMetricFamily(
            "simrec_index_version", "1 as the package was built, +1 per live addition", current.index_version
        )
        yield GaugeMetricFamily(
            "simrec_index_items", "catalogue items in the index", len(current.recommender.items)
        )


class Metrics:
    def __init__(self, state: ServingState) -> None:
        # No `_created` series beside each counter and histogram: a third of the text, read by no one here.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "simrec_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "simrec_request_duration_seconds",
            "time from the request's arrival to the end of its answer, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "simrec_batch_images", "images per model batch", buckets=BATCH_BUCKETS, registry=registry
        )
        self.shed = Counter(
            "simrec_shed_requests",
            "queries refused with 503: the in-flight bound was reached",
            registry=registry,
        )
        self.added = Counter(
            "simrec_live_items_added",
            "items added to the live index",
            registry=registry,
        )
        self._queue = Gauge("simrec_queue_images", "images waiting for a model thread", registry=registry)
        self._in_flight = Gauge(
            "simrec_in_flight_requests",
            "queries that may need the model, admitted and not answered",
            registry=registry,
        )
        self._limit = Gauge(
            "simrec_in_flight_limit",
            "queries that may be in flight before requests are shed",
            registry=registry,
        )
        registry.register(_Served(state))

    def watch(self, batcher: Batcher, admission: Admission) -> None:
        """The model threads' queue, the queries in flight and their bound, read at each scrape."""
        self._queue.set_function(lambda: batcher.pending_images)
        self._in_flight.set_function(lambda: admission.in_flight)
        self._limit.set_function(lambda: admission.limit)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
