"""What an operator sees: Prometheus metrics at /metrics (read with Prometheus' own text parser) moving
with the requests, and one JSON access log line per request carrying its request id."""

from __future__ import annotations

import json
import time

import requests
from pngs import pattern, png
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import b64


def scrape(server) -> dict[tuple[str, frozenset], float]:
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_with_the_requests(server):
    before = scrape(server)
    for seed in range(5):
        server.similar(image=b64(png(pattern(seed))), k=3)
    server.similar(item_id="item-00002", k=3)
    assert server.post("/similar", json={"item_id": "no-such-item"}).status_code == 404
    assert requests.post(server.url + "/similar", json={}, timeout=10).status_code == 401  # the guard's
    assert server.get("/v2/models/simrec/ready").status_code == 200
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/similar", "method": "POST"}
    assert moved("simrec_requests_total", **route, status="200") == 6
    assert moved("simrec_requests_total", **route, status="404") == 1
    assert moved("simrec_requests_total", **route, status="401") == 1
    # a route template, not the path: /v2/models/simrec/ready is one series whatever the model name
    ready = {"route": "/v2/models/{model_name}/ready", "method": "GET", "status": "200"}
    assert moved("simrec_requests_total", **ready) == 1
    assert moved("simrec_request_duration_seconds_count", route="/similar") == 8
    assert moved("simrec_request_duration_seconds_bucket", route="/similar", le="+Inf") == 8
    assert moved("simrec_batch_images_count") == 5 and moved("simrec_batch_images_sum") == 5
    # what is served, read at scrape time
    assert value(after, "simrec_ready") == 1
    info = [labels for (name, labels) in after if name == "simrec_model_info"]
    assert len(info) == 1 and {("version", "1"), ("model_name", "simrec")} <= info[0]
    assert value(after, "simrec_index_items") == 300 and value(after, "simrec_index_version") == 1
    assert value(after, "simrec_queue_images") == 0 and value(after, "simrec_in_flight_requests") == 0
    assert value(after, "simrec_in_flight_limit") >= 1
    assert value(after, "simrec_shed_requests_total") == 0


def test_access_log_is_json_with_the_request_id(server):
    given = server.post("/similar", json={"item_id": "item-00003"}, headers={"X-Request-ID": "trace-42.a"})
    assert given.headers["x-request-id"] == "trace-42.a"
    unusable = server.post("/similar", json={"item_id": "item-00003"}, headers={"X-Request-ID": "a b" * 100})
    made = unusable.headers["x-request-id"]
    assert len(made) == 32 and made != "a b" * 100
    refused = requests.get(server.url + "/v2/models/simrec", timeout=10)  # the guard's 401 is logged too
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        by_id = {line.get("request_id"): line for line in lines if line["logger"] == "simrec.access"}
        if {"trace-42.a", made, refused.headers["x-request-id"]} <= set(by_id) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert by_id["trace-42.a"] | {"time": None, "duration_ms": None, "client": None} == {
        "time": None,
        "level": "INFO",
        "logger": "simrec.access",
        "message": "request",
        "request_id": "trace-42.a",
        "method": "POST",
        "path": "/similar",
        "route": "/similar",
        "status": 200,
        "duration_ms": None,
        "client": None,
    }
    assert by_id[made]["status"] == 200
    assert by_id[refused.headers["x-request-id"]]["status"] == 401
    # the server's other lines are JSON too (uvicorn's start-up, the package load)
    assert any(line["logger"].startswith("uvicorn") for line in lines)
