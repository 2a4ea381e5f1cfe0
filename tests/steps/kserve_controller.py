"""KServe's part in the tests' real Kubernetes API server (tests/kube_api.py): a controller that writes an
InferenceService's status only, through the status subresource, driven by watch events (and by revisions
becoming ready a moment later, as Knative reports them), never by the rollout's own reads.

Written from KServe 0.14.1 (Serverless mode):
- pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go: the Knative Service's
  traffic: with canaryTrafficPercent and a rolled-out revision, `latestRevision` gets that share and the last
  rolled-out revision the rest (tag prev), else `latestRevision` gets all of it; a change of the predictor
  other than canaryTrafficPercent is a new revision <name>-predictor-0000N (Knative's naming);
- pkg/apis/serving/v1beta1/inference_service_status.go: PropagateStatus (latestRolledoutRevision advances
  when the latest ready revision has 100 %, and goes back to previousRolledoutRevision when the rolled-out
  latest revision is given less: a rollback), the conditions it copies from the Knative Service, and
  PropagateModelStatus (a storage initializer that fails: modelStatus BlockedByFailedLoad, ModelLoadFailed);
  status.observedGeneration is the Knative Service's generation, not the InferenceService's.
Knative routes `latestRevision` to the latest *ready* revision. A revision is Ready after `ready_after_s`
unless the test said otherwise with `behave(revision, ...)` before it is created: "fails" (the revision's
container exits: PredictorReady False, RevisionFailed), "load-fails" (the storage initializer fails) or
"hangs" (never Ready). Nothing in the InferenceService's spec chooses that."""

from __future__ import annotations

import copy
import heapq
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from kube_api import ApiError, KubeAPI

COLLECTION = "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"
BEHAVIOURS = ("ready", "fails", "load-fails", "hangs")


@dataclass
class Revision:
    name: str
    template: dict[str, Any]
    behaviour: str
    created: float
    ready_at: float


@dataclass
class Service:
    """What KServe and Knative know of one InferenceService besides what its status shows."""

    revisions: list[Revision] = field(default_factory=list)
    ksvc_spec: Any = None
    ksvc_generation: int = 0


class KServeController:
    def __init__(self, api: KubeAPI, namespace: str, ready_after_s: float = 0.3) -> None:
        self.api, self.namespace, self.ready_after_s = api, namespace, ready_after_s
        self.collection = COLLECTION.format(namespace=namespace)
        self.services: dict[str, Service] = {}
        self.behaviours: dict[str, str] = {}
        self.traffic_history: list[dict[str, int]] = []  # revision -> percent > 0, at every reconcile
        self.conflicts = 0  # status writes refused with 409 (the rollout changed the object meanwhile)
        self.errors: list[str] = []
        self._queue: list[tuple[float, str]] = []
        self._wake = threading.Condition()
        self._stop = threading.Event()
        # list, then watch from the list's resourceVersion, as an informer does: nothing made in between
        # is missed, whatever the threads' timing
        listing = self.api.get(self.collection)
        for item in listing["items"]:
            self._enqueue(item["metadata"]["name"], 0.0)
        self._threads = [
            threading.Thread(
                target=self._watch,
                args=(listing["metadata"]["resourceVersion"],),
                name="kserve-watch",
                daemon=True,
            ),
            threading.Thread(target=self._work, name="kserve-reconcile", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def behave(self, revision: str, behaviour: str) -> None:
        """How the revision of that name will do once the rollout makes it."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour {behaviour!r}: one of {BEHAVIOURS}")
        self.behaviours[revision] = behaviour

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        assert not self.errors, self.errors

    # -- the informer: watch events put names on the queue --------------------------------------------------

    def _watch(self, version: str) -> None:
        session = self.api.session()
        while not self._stop.is_set():
            params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
            try:
                # a short read timeout so that stop() is noticed; the watch resumes where it was
                with session.get(
                    self.api.url + self.collection, params=params, stream=True, timeout=(5, 1)
                ) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        if not line.strip():  # iter_lines yields an empty line where a chunk ends in one
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # e.g. 410 Gone: start over from now
                            version = self.api.get(self.collection)["metadata"]["resourceVersion"]
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._enqueue(event["object"]["metadata"]["name"], 0.0)
            except requests.RequestException:
                time.sleep(0.05)  # the read timeout, or the server going away at the end
            except Exception as exc:  # kept for stop() to report, as a test failure; the watch goes on
                self.errors.append(f"watch: {exc!r}")
                time.sleep(0.05)

    def _enqueue(self, name: str, delay_s: float) -> None:
        with self._wake:
            heapq.heappush(self._queue, (time.monotonic() + delay_s, name))
            self._wake.notify_all()

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                now = time.monotonic()
                if not self._queue or self._queue[0][0] > now:
                    self._wake.wait(timeout=(self._queue[0][0] - now) if self._queue else 1.0)
                    continue
                _, name = heapq.heappop(self._queue)
                self._queue = [(due, other) for due, other in self._queue if other != name or due > now]
                heapq.heapify(self._queue)
            try:
                self._reconcile(name)
            except Exception as exc:  # kept for stop() to report, as a test failure
                self.errors.append(f"{name}: {exc!r}")

    # -- the reconciler -------------------------------------------------------------------------------------

    def _reconcile(self, name: str) -> None:
        try:
            isvc = self.api.get(f"{self.collection}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                self.services.pop(name, None)
                return
            raise
        service = self.services.setdefault(name, Service())
        status, next_change = self._status(name, isvc, service)
        if next_change is not None:
            self._enqueue(name, max(next_change - time.monotonic(), 0.0))
        if status == _without_times(isvc.get("status")):
            return
        _keep_transition_times(status, isvc.get("status") or {})
        # resourceVersion: a write over a newer object is refused (409) and the newer one reconciled
        body = {k: isvc[k] for k in ("apiVersion", "kind", "metadata")} | {"status": status}
        try:
            self.api.request("PUT", f"{self.collection}/{name}/status", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self.conflicts += 1
            self._enqueue(name, 0.0)

    def _status(
        self, name: str, isvc: dict[str, Any], service: Service
    ) -> tuple[dict[str, Any], float | None]:
        """The status KServe would write now, and when it will change by itself (a revision getting ready)."""
        now = time.monotonic()
        predictor = isvc["spec"]["predictor"]
        template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
        if not service.revisions or service.revisions[-1].template != template:
            revision = f"{name}-predictor-{len(service.revisions) + 1:05d}"
            behaviour = self.behaviours.get(revision, "ready")
            service.revisions.append(
                Revision(revision, copy.deepcopy(template), behaviour, now, now + self.ready_after_s)
            )
        created = service.revisions[-1]
        ready_revisions = [r for r in service.revisions if r.behaviour == "ready" and r.ready_at <= now]
        ready = ready_revisions[-1] if ready_revisions else None
        pending = [r.ready_at for r in service.revisions if r.behaviour == "ready" and r.ready_at > now]

        old = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
        rolled_out, previous = (
            old.get("latestRolledoutRevision", ""),
            old.get("previousRolledoutRevision", ""),
        )

        # ksvc_reconciler: the Knative Service's traffic, from the InferenceService's status before this
        canary = predictor.get("canaryTrafficPercent")
        targets: list[dict[str, Any]] = []
        if canary is not None and rolled_out:
            targets.append({"tag": "latest", "latestRevision": True, "percent": canary})
            if canary < 100:
                targets.append(
                    {
                        "tag": "prev",
                        "revisionName": rolled_out,
                        "latestRevision": False,
                        "percent": 100 - canary,
                    }
                )
        else:
            targets.append({"latestRevision": True, "percent": 100})
        ksvc_spec = {"template": template, "traffic": targets}
        if ksvc_spec != service.ksvc_spec:
            service.ksvc_spec, service.ksvc_generation = copy.deepcopy(ksvc_spec), service.ksvc_generation + 1
        traffic = []
        if ready is not None:
            traffic = [dict(t, revisionName=t.get("revisionName") or ready.name) for t in targets]
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
            if rolled_out != ready.name:
                if target["percent"] == 100:
                    previous, rolled_out = rolled_out, ready.name
            elif (
                ready is created
                and target["percent"] < 100
                and per_revision[target["revisionName"]] == 100
                and previous
            ):
                rolled_out = previous

        # Knative's conditions for the latest created revision (ConfigurationsReady) and the route
        if created.behaviour == "fails":
            configuration = _condition(
                "False",
                "RevisionFailed",
                f'Revision "{created.name}" failed with message: container exited with code 1.',
            )
        elif ready is created:
            configuration = _condition("True")
        else:
            configuration = _condition(
                "Unknown",
                "RevisionMissing",
                f"Configuration is waiting for a Revision {created.name} to become ready.",
            )
        route = (
            _condition("True")
            if traffic
            else _condition("Unknown", "RevisionMissing", "no ready revision to route to")
        )
        # the Knative Service's Ready: its configuration's when that is not True, else its route's
        knative_ready = configuration if configuration["status"] != "True" else route
        conditions = {
            "PredictorConfigurationReady": configuration,
            "LatestDeploymentReady": configuration,
            "PredictorRouteReady": route,
            "PredictorReady": knative_ready,
            "IngressReady": _condition("True") if traffic else _condition("Unknown", "IngressNotReady"),
        }
        ready_status = (
            "True"
            if all(c["status"] == "True" for c in conditions.values())
            else ("False" if any(c["status"] == "False" for c in conditions.values()) else "Unknown")
        )
        conditions["Ready"] = (
            _condition(ready_status) if ready_status == "True" else dict(knative_ready, status=ready_status)
        )

        component: dict[str, Any] = {"latestCreatedRevision": created.name, "traffic": traffic}
        if ready is not None:
            component["latestReadyRevision"] = ready.name
        if rolled_out:
            component["latestRolledoutRevision"] = rolled_out
        if previous:
            component["previousRolledoutRevision"] = previous
        status: dict[str, Any] = {
            "observedGeneration": service.ksvc_generation,
            "conditions": [dict(c, type=t) for t, c in sorted(conditions.items())],
            "components": {"predictor": component},
            "modelStatus": _model_status(created, ready_status == "True" and ready is created),
        }
        return status, min(pending) if pending else None

    def traffic(self, name: str = "simrec") -> dict[str, int]:
        """The predictor's traffic (revision -> percent > 0) as the server holds it now."""
        status = self.api.get(f"{self.collection}/{name}").get("status") or {}
        targets = status.get("components", {}).get("predictor", {}).get("traffic") or []
        return {t["revisionName"]: t["percent"] for t in targets if t["percent"]}

    def predictor(self, name: str = "simrec") -> dict[str, Any]:
        return self.api.get(f"{self.collection}/{name}")["status"]["components"]["predictor"]


def _condition(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"status": status}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _model_status(created: Revision, loaded: bool) -> dict[str, Any]:
    """PropagateModelStatus / UpdateModelRevisionStates for the latest revision's pods."""
    if loaded:
        return {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
            "copies": {"failedCopies": 0, "totalCopies": 1},
        }
    if created.behaviour == "load-fails":
        return {
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
            "lastFailureInfo": {
                "reason": "ModelLoadFailed",
                "message": "storage-initializer: no such key: artifacts/package",
                "exitCode": 1,
            },
        }
    return {
        "transitionStatus": "InProgress",
        "states": {"activeModelState": "", "targetModelState": "Loading"},
    }


def _without_times(status: dict[str, Any] | None) -> dict[str, Any] | None:
    if not status:
        return status
    copied = copy.deepcopy(status)
    for condition in copied.get("conditions") or []:
        condition.pop("lastTransitionTime", None)
    return copied


def _keep_transition_times(status: dict[str, Any], old: dict[str, Any]) -> None:
    """A condition keeps its lastTransitionTime until its status changes (knative.dev/pkg/apis)."""
    before = {c["type"]: c for c in old.get("conditions") or []}
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition in status["conditions"]:
        previous = before.get(condition["type"])
        same = previous is not None and previous.get("status") == condition["status"]
        condition["lastTransitionTime"] = (
            previous.get("lastTransitionTime", stamp) if same and previous else stamp
        )
