"""Load shedding over HTTP: a burst past the queue's bound is answered 503 with Retry-After at once,
counted in /metrics, and the server answers normally right after. The figures under 64 and 256 clients
are benchmarks/serve.py's (--overload)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from pngs import pattern, png
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import b64

BATCH = [b64(png(pattern(seed))) for seed in range(64)]  # the largest request: 64 images


def shed_count(server) -> float:
    families = text_string_to_metric_families(requests.get(server.url + "/metrics", timeout=10).text)
    return next(s.value for f in families for s in f.samples if s.name == "simrec_shed_requests_total")


def test_a_burst_is_shed_with_503_and_retry_after_then_answered(plain_server):
    """plain_server: one model thread, at most 2 queries in flight. Each carries 64 images (the largest
    batch), so 16 clients at once overflow it."""
    server = plain_server
    body = {"inputs": [{"name": "image", "shape": [64], "datatype": "BYTES", "data": BATCH}]}
    shed_before = shed_count(server)

    def ask(_: int) -> requests.Response:
        with requests.Session() as session:
            return session.post(
                server.url + "/v2/models/simrec/infer", json=body, headers=server.auth, timeout=60
            )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(48)))
    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) == {200, 503}, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert "overloaded" in answer.json()["error"]
        else:
            assert answer.json()["outputs"][0]["shape"] == [64, 5]
    assert shed_count(server) - shed_before == statuses[503]
    # nothing was left waiting: the server answers at once again
    assert server.similar(image=BATCH[0], k=3)
    follow_up = [ask(n) for n in range(3)]  # one at a time: nothing waits, nothing is shed
    assert [answer.status_code for answer in follow_up] == [200, 200, 200]
