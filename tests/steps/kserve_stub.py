"""A stand-in Kubernetes API with a simulated KServe controller (Serverless mode), on a loopback port.

It serves the InferenceService routes the `kubernetes` client calls (GET, POST, PUT with resourceVersion,
PATCH as a JSON merge patch), checks the bearer token, records every request, and reconciles once per GET
the way KServe does (pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go and
pkg/apis/serving/v1beta1/inference_service_status.go, PropagateStatus):
- a change of the predictor other than canaryTrafficPercent is a new revision <name>-predictor-0000N;
- traffic: with canaryTrafficPercent and a rolled-out revision, the latest ready revision gets that share
  and the last rolled-out one the rest, else the latest ready revision gets all of it;
- latestRolledoutRevision advances when the latest ready revision has 100%, and goes back to
  previousRolledoutRevision when the rolled-out latest revision is given less (a rollback).
A revision whose container args or env contain "fails" is failed after one reconcile (Ready False, as
Knative reports a crashing container); one containing "hangs" never becomes ready; others are ready after
`ready_after` reconciles."""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from json_handler import JsonHandler, LoopbackServer

ROUTE = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/?]+))?$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Revision:
    name: str
    template: dict[str, Any]
    age: int = 0
    state: str = "pending"  # pending | ready | failed


@dataclass
class Controller:
    """KServe's view of one InferenceService."""

    revisions: list[Revision] = field(default_factory=list)
    rolled_out: str = ""
    previous: str = ""


class KubeStub:
    def __init__(self, token: str = "stub-token", ready_after: int = 2) -> None:
        self.token, self.ready_after = token, ready_after
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.controllers: dict[tuple[str, str], Controller] = {}
        self.requests: list[dict[str, Any]] = []
        self.traffic_history: list[dict[str, int]] = []  # revision -> percent > 0, at every reconcile
        self.lock = threading.Lock()
        stub = self

        class Handler(JsonHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with stub.lock:
                    stub.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "body": body,
                        }
                    )
                    if self.headers.get("Authorization") != f"Bearer {stub.token}":
                        return self.reply(_status(401, "Unauthorized"), 401)
                    match = ROUTE.match(self.path.split("?")[0])
                    if not match:
                        return self.reply(_status(404, f"no route {self.path}"), 404)
                    status, answer = stub.handle(self.command, match["ns"], match["name"], body)
                    self.reply(answer, status)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

        self._http = LoopbackServer(Handler)
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] != "GET"]

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {"token": self.token}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
            "current-context": "stub",
        }

    # -- the API server --------------------------------------------------------------------------------

    def handle(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "POST":
            key = (ns, body["metadata"]["name"])
            if key in self.objects:
                return 409, _status(409, f"inferenceservices {key[1]} already exists")
            obj = copy.deepcopy(body)
            obj["metadata"] |= {"generation": 1, "resourceVersion": "1", "namespace": ns}
            self.objects[key] = obj
            self.controllers[key] = Controller()
            return 201, obj
        key = (ns, name or "")
        if key not in self.objects:
            return 404, _status(404, f'inferenceservices.serving.kserve.io "{name}" not found')
        current = self.objects[key]
        if method == "GET":
            self.reconcile(key)
            return 200, copy.deepcopy(self.objects[key])
        if method == "PUT":
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return 409, _status(409, "the object has been modified")
            updated = copy.deepcopy(body)
            updated["status"] = current.get("status", {})
        elif method == "PATCH":
            updated = merge_patch(current, body)
        else:
            return 405, _status(405, method)
        meta = updated["metadata"]
        meta["generation"] = current["metadata"]["generation"] + (updated["spec"] != current["spec"])
        meta["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.objects[key] = updated
        return 200, copy.deepcopy(updated)

    # -- the KServe controller -----------------------------------------------------------------------------

    def reconcile(self, key: tuple[str, str]) -> None:
        obj, ctl = self.objects[key], self.controllers[key]
        predictor = obj["spec"]["predictor"]
        template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        if not ctl.revisions or ctl.revisions[-1].template != template:
            ctl.revisions.append(Revision(f"{key[1]}-predictor-{len(ctl.revisions) + 1:05d}", template))
        for revision in ctl.revisions:
            revision.age += 1
            text = json.dumps(revision.template["containers"])
            if revision.state == "pending" and "fails" in text:
                revision.state = "failed"
            elif revision.state == "pending" and "hangs" not in text and revision.age >= self.ready_after:
                revision.state = "ready"
        created = ctl.revisions[-1]
        ready = next((r for r in reversed(ctl.revisions) if r.state == "ready"), None)

        # the Knative Service's traffic, from the status before this reconcile
        canary = predictor.get("canaryTrafficPercent")
        targets: list[dict[str, Any]] = []
        if canary is not None and ctl.rolled_out:
            targets.append({"latestRevision": True, "percent": canary, "tag": "latest"})
            if canary < 100:
                targets.append(
                    {
                        "revisionName": ctl.rolled_out,
                        "latestRevision": False,
                        "percent": 100 - canary,
                        "tag": "prev",
                    }
                )
        else:
            targets.append({"latestRevision": True, "percent": 100})
        traffic = []
        if ready is not None:  # Knative routes `latestRevision` to the latest *ready* revision
            for target in targets:
                resolved = target.get("revisionName") or ready.name
                traffic.append(dict(target, revisionName=resolved))

        self.traffic_history.append({t["revisionName"]: t["percent"] for t in traffic if t["percent"]})

        # PropagateStatus
        per_revision: dict[str, int] = {}
        for target in traffic:
            per_revision[target["revisionName"]] = (
                per_revision.get(target["revisionName"], 0) + target["percent"]
            )
        for target in traffic:
            if ready is None or target["revisionName"] != ready.name or not target["latestRevision"]:
                continue
            if ctl.rolled_out != ready.name:
                if target["percent"] == 100:
                    ctl.previous, ctl.rolled_out = ctl.rolled_out, ready.name
            elif (
                ready is created
                and target["percent"] < 100
                and per_revision.get(target["revisionName"]) == 100
                and ctl.previous
            ):
                ctl.rolled_out = ctl.previous

        if created.state == "failed":
            predictor_ready = {
                "type": "PredictorReady",
                "status": "False",
                "reason": "RevisionFailed",
                "message": f'Revision "{created.name}" failed with message: container exited with code 1.',
            }
        elif ready is created:
            predictor_ready = {"type": "PredictorReady", "status": "True"}
        else:
            predictor_ready = {"type": "PredictorReady", "status": "Unknown", "reason": "RevisionMissing"}
        ingress = {"type": "IngressReady", "status": "True" if traffic else "Unknown"}
        both = [predictor_ready["status"], ingress["status"]]
        overall = "True" if both == ["True", "True"] else "False" if "False" in both else "Unknown"
        ready_condition = {"type": "Ready", "status": overall}
        if overall != "True":
            ready_condition |= {k: v for k, v in predictor_ready.items() if k in ("reason", "message")}
        component = {"latestCreatedRevision": created.name, "traffic": traffic}
        if ready is not None:
            component["latestReadyRevision"] = ready.name
        if ctl.rolled_out:
            component["latestRolledoutRevision"] = ctl.rolled_out
        if ctl.previous:
            component["previousRolledoutRevision"] = ctl.previous
        obj["status"] = {
            "observedGeneration": 1,  # KServe copies the Knative Service's counter: not to be relied on
            "conditions": [ingress, predictor_ready, ready_condition],
            "components": {"predictor": component},
        }


def _status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
