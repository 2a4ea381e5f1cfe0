"""A local stand-in for the Kubeflow Pipelines REST API (/apis/v2beta1), recording what clients send.

multi_user=True answers healthz as a multi-user Kubeflow does and refuses an experiment without a
namespace with the API server's message (backend/src/apiserver/server/experiment_server.go at 2.4.1)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

from json_handler import JsonHandler, LoopbackServer

API = "/apis/v2beta1"


class KfpStub:
    def __init__(self, multi_user: bool = False) -> None:
        self.multi_user = multi_user
        self.experiments: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.recurring_runs: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []  # each request's Authorization header
        stub = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                stub.requests.append(("GET", url.path))
                stub.authorizations.append(self.headers.get("Authorization"))
                if url.path == f"{API}/healthz":
                    self.reply({"multi_user": stub.multi_user})
                elif url.path == f"{API}/experiments":
                    query = json.loads(parse_qs(url.query).get("filter", ["{}"])[0])
                    names = [p.get("string_value") for p in query.get("predicates", [])]
                    found = [e for e in stub.experiments if not names or e["display_name"] in names]
                    self.reply({"experiments": found, "total_size": len(found)})
                else:
                    self.reply({"error": "not found"}, 404)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                stub.requests.append(("POST", self.path))
                stub.authorizations.append(self.headers.get("Authorization"))
                if self.path == f"{API}/experiments":
                    if stub.multi_user and not body.get("namespace"):
                        message = "An experiment cannot have an empty namespace in multi-user mode"
                        self.reply({"error": message, "message": message, "code": 3}, 400)
                        return
                    body["experiment_id"] = str(uuid.uuid4())
                    stub.experiments.append(body)
                elif self.path == f"{API}/runs":
                    body |= {"run_id": str(uuid.uuid4()), "state": "PENDING"}
                    stub.runs.append(body)
                elif self.path == f"{API}/recurringruns":
                    body |= {"recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
                    stub.recurring_runs.append(body)
                else:
                    self.reply({"error": "not found"}, 404)
                    return
                self.reply(body)

        self._http = LoopbackServer(Handler)
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()
