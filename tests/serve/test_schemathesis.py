"""schemathesis over the server's own OpenAPI description: for every operation, requests generated to
fit the schema and to break it (schemathesis' positive and negative modes), sent without a token, with
the query token and with the admin token, to a real server. None may answer 5xx, except a deliberate 503
with Retry-After (a shed request). The counts are printed (pytest -s) for the record.

The server is the read-only session one: its package root is empty, so no generated deploy can load
anything, and a generated image is never a valid PNG, so no live addition can succeed.

The description is loaded at collection from the app itself (the same code the server runs; a test checks
the server serves exactly it): schemathesis' lazy loader from a fixture fails under pytest 9 (it reads
pytest's private `_nodeid`)."""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from serve_helpers import bearer

EXAMPLES = 25  # per operation, each sent with 3 credentials: ~1,000 requests
statuses: Counter[tuple[str, int]] = Counter()


def described() -> dict:
    """The OpenAPI description of a server with both planes on, as create_app builds it."""
    from simrec.serving.app import Settings, create_app
    from simrec.serving.state import ServingState

    return create_app(ServingState("simrec"), Settings(token="query", admin_token="admin")).openapi()


DESCRIPTION = described()
schema = schemathesis.openapi.from_dict(DESCRIPTION)


def test_the_server_serves_this_description(server):
    assert requests.get(server.url + "/openapi.json", timeout=10).json() == DESCRIPTION
    assert any(path.startswith("/admin/") for path in DESCRIPTION["paths"])


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    by_status = Counter()
    for (_, status), count in statuses.items():
        by_status[status] += count
    print(f"\nschemathesis: {sum(by_status.values())} requests, by status {dict(sorted(by_status.items()))}")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, server):
    for token in (None, server.token, server.admin_token):  # each generated request with each credential
        response = case.call(base_url=server.url, headers=bearer(token), timeout=30)
        statuses[(case.operation.label, response.status_code)] += 1
        shed = response.status_code == 503 and "retry-after" in response.headers
        assert response.status_code < 500 or shed, (case.as_curl_command(), response.text[:300])
        if response.status_code >= 400:
            assert response.json()["error"]
