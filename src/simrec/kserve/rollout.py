"""The deploy step's KServe layer: a canary rollout of the InferenceService (Serverless mode), and
rolling the traffic back.

roll_out:  replace the InferenceService's spec with the new model version and `canaryTrafficPercent`;
           wait until the new revision is Ready and takes its share; then remove the field (KServe
           promotes the latest ready revision to 100%), or leave the canary when asked to. A revision that
           fails (a False condition, a failed model load) or is not Ready in time is rolled back: the field
           is set to 0, so the revision rolled out before keeps 100%, and the step fails with the reason.
roll_back: the same 0 by hand: the previous rolled-out revision gets all traffic again.

Only KServe's status is read: status.conditions, status.modelStatus and status.components.predictor
(latestCreatedRevision, latestReadyRevision, latestRolledoutRevision, previousRolledoutRevision,
traffic). Not status.observedGeneration: KServe copies the Knative Service's generation there, another
counter than the InferenceService's; a new latestCreatedRevision and the traffic split show that KServe
acted on a change. The Kubernetes API is reached through simrec.kserve.api.

About 340 lines: the status reading, the waits and the roll-back-on-failure paths are one state machine
over the same object; tests/steps/test_kserve.py drives it against a real API server."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simrec.infra.errors import InputError
from simrec.kserve.api import CANARY, ApiError, InferenceServices

# Conditions whose False means the new revision will not serve (KServe copies Knative's reason there).
FAILING_CONDITIONS = ("Ready", "PredictorReady", "LatestDeploymentReady", "PredictorConfigurationReady")
ROLLBACK_TIMEOUT_S = 120.0
CONFLICT_ATTEMPTS = 5  # updates refused because the object changed meanwhile (409), each read again


class RolloutFailed(InputError):
    """The new version does not serve; `record` says why and what serves instead."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class Status:
    """What KServe reports about an InferenceService's predictor."""

    ready: str  # the Ready condition: True, False or Unknown
    failure: str | None  # why the latest revision fails, when KServe says it does
    created: str | None  # latestCreatedRevision
    latest_ready: str | None
    rolled_out: str | None  # latestRolledoutRevision: the last revision promoted to 100%
    previous: str | None  # previousRolledoutRevision
    traffic: dict[str, int] = field(default_factory=dict)  # revision -> percent

    @classmethod
    def of(cls, isvc: dict[str, Any]) -> Status:
        status = isvc.get("status") or {}
        predictor = (status.get("components") or {}).get("predictor") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        traffic: dict[str, int] = {}
        for target in predictor.get("traffic") or []:
            if target.get("revisionName") and target.get("percent") is not None:
                traffic[target["revisionName"]] = traffic.get(target["revisionName"], 0) + target["percent"]
        failed = [
            f"{kind}: {c.get('reason') or ''} {c.get('message') or ''}".strip()
            for kind in FAILING_CONDITIONS
            if (c := conditions.get(kind)) and c.get("status") == "False"
        ]
        model = status.get("modelStatus") or {}
        if model.get("transitionStatus") == "BlockedByFailedLoad":
            info = model.get("lastFailureInfo") or {}
            failed.append(f"model load failed: {info.get('reason', '')} {info.get('message', '')}".strip())
        return cls(
            ready=(conditions.get("Ready") or {}).get("status", "Unknown"),
            failure="; ".join(failed) or None,
            created=predictor.get("latestCreatedRevision"),
            latest_ready=predictor.get("latestReadyRevision"),
            rolled_out=predictor.get("latestRolledoutRevision"),
            previous=predictor.get("previousRolledoutRevision"),
            traffic=traffic,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "latest_created_revision": self.created,
            "latest_ready_revision": self.latest_ready,
            "latest_rolledout_revision": self.rolled_out,
            "previous_rolledout_revision": self.previous,
            "traffic": dict(sorted(self.traffic.items())),
        }


def _template(isvc: dict[str, Any]) -> dict[str, Any]:
    """The predictor without the traffic field: a change here is a new Knative revision."""
    predictor = copy.deepcopy((isvc.get("spec") or {}).get("predictor") or {})
    predictor.pop(CANARY, None)
    return predictor


def _wait(
    services: InferenceServices,
    namespace: str,
    name: str,
    done: Callable[[Status], bool],
    *,
    timeout_s: float,
    poll_s: float,
    fresh: Callable[[Status], bool] | None = None,
) -> tuple[Status | None, str | None]:
    """Polls until `done`; else (last status, why not): timeout, or a failure KServe reports for the
    latest revision once `fresh` says the status is about the change (None: failures are expected)."""
    deadline = time.monotonic() + timeout_s
    status = None
    while True:
        isvc = services.get(namespace, name)
        if isvc is None:
            return None, f"{namespace}/{name} was deleted"
        status = Status.of(isvc)
        if done(status):
            return status, None
        if fresh and fresh(status) and status.failure and status.created != status.latest_ready:
            return status, f"revision {status.created} failed: {status.failure}"
        if time.monotonic() > deadline:
            return status, f"not Ready with its traffic within {timeout_s:g} s ({status.summary()})"
        time.sleep(poll_s)


def roll_out(
    services: InferenceServices,
    manifest: dict[str, Any],
    *,
    canary_percent: int,
    promote: bool = True,
    timeout_s: float = 900.0,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Rolls `manifest` (render_inference_service's, without canaryTrafficPercent) out; RolloutFailed
    (the previous revision keeps all traffic) when the new revision does not become Ready."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    existing = services.get(namespace, name)
    body = copy.deepcopy(manifest)
    body["spec"]["predictor"].pop(CANARY, None)
    if existing is None:
        return _create(services, body, timeout_s=timeout_s, poll_s=poll_s)
    return _roll_out_over(
        services,
        body,
        existing,
        canary_percent=canary_percent,
        promote=promote,
        timeout_s=timeout_s,
        poll_s=poll_s,
    )


def _create(
    services: InferenceServices, body: dict[str, Any], *, timeout_s: float, poll_s: float
) -> dict[str, Any]:
    """The first revision takes all traffic (KServe ignores a canary with nothing rolled out before)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    where = f"{namespace}/{name}"
    services.create(body)
    status, problem = _wait(
        services,
        namespace,
        name,
        lambda s: _serves(s, 100),
        timeout_s=timeout_s,
        poll_s=poll_s,
        fresh=lambda s: s.created is not None,
    )
    if problem:
        record = {"outcome": "refused", "inference_service": where, "reason": problem}
        record["rollback"] = "nothing served before: the new InferenceService stays, not ready"
        raise RolloutFailed(f"{where}: {problem}; nothing served before", record)
    assert status is not None
    return {"outcome": "serving", "inference_service": where, "revision": status.latest_ready} | {
        "status": status.summary()
    }


def _roll_out_over(
    services: InferenceServices,
    body: dict[str, Any],
    existing: dict[str, Any],
    *,
    canary_percent: int,
    promote: bool,
    timeout_s: float,
    poll_s: float,
) -> dict[str, Any]:
    """A new revision beside the rolled-out one: staged at 0%, then the canary share, then (when asked
    to) promoted; rolled back to the stable revision when any stage fails."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    before, new_revision, staged = _update(services, body, existing)
    stable = before.rolled_out

    def reconciled(s: Status) -> bool:
        return not new_revision or s.created != before.created  # KServe made the new revision

    def wait(done: Callable[[Status], bool]) -> tuple[Status | None, str | None]:
        return _wait(services, namespace, name, done, timeout_s=timeout_s, poll_s=poll_s, fresh=reconciled)

    if not staged:
        status, problem = wait(lambda s: reconciled(s) and _serves(s, 100))
    else:
        status, problem = wait(lambda s: reconciled(s) and _serves(s, 0))
        new = status.latest_ready if status else None
        canary = canary_percent < 100
        if problem is None and canary:
            services.set_canary(namespace, name, canary_percent)
            status, problem = wait(
                lambda s: _serves(s, canary_percent) and s.traffic.get(stable or "") == 100 - canary_percent
            )
        if problem is None and (promote or not canary):
            services.set_canary(namespace, name, None)
            status, problem = wait(lambda s: s.rolled_out == new and _serves(s, 100))
    if problem:
        _roll_back_after(services, namespace, name, before, problem, poll_s)
    assert status is not None
    outcome = "canary" if staged and canary_percent < 100 and not promote else "serving"
    record = {"outcome": outcome, "inference_service": f"{namespace}/{name}", "revision": status.latest_ready}
    if outcome == "canary":
        record |= {"canary_percent": canary_percent, "stable_revision": stable}
    return record | {"previous_revision": stable, "status": status.summary()}


def _update(
    services: InferenceServices, manifest: dict[str, Any], existing: dict[str, Any]
) -> tuple[Status, bool, bool]:
    """Replaces the InferenceService with `manifest` over `existing` (the resourceVersion read: a change
    made meanwhile is refused with 409). KServe writes the status, each time a new resourceVersion, whenever
    a revision or the traffic changes, so on 409 the object is read again and the update retried.
    Returns (the status before, whether the predictor changed: a new revision, whether it is staged)."""
    namespace, name = existing["metadata"]["namespace"], existing["metadata"]["name"]
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        body = copy.deepcopy(manifest)
        before = Status.of(existing)
        new_revision = _template(existing) != _template(body)
        # A new revision beside a rolled-out one starts with no traffic: until it is Ready, Knative would
        # send a canary share to the latest *ready* revision, which may be one rolled back by hand.
        staged = new_revision and before.rolled_out is not None
        if staged:
            body["spec"]["predictor"][CANARY] = 0
        # (Same template: no new revision; the latest ready one takes all traffic, as after a rollback.)
        body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        # keep what others put there (Argo CD's tracking label, kubectl's annotations); ours win
        for key in ("labels", "annotations"):
            body["metadata"][key] = existing["metadata"].get(key, {}) | body["metadata"].get(key, {})
        try:
            services.replace(body)
            return before, new_revision, staged
        except ApiError as exc:
            if exc.status != 409 or attempt == CONFLICT_ATTEMPTS:
                raise
        reread = services.get(namespace, name)
        if reread is None:
            raise InputError(f"{namespace}/{name} was deleted during the rollout")
        existing = reread
    raise AssertionError("unreachable")


def _serves(status: Status, percent: int) -> bool:
    """The latest revision is Ready and has `percent` of the traffic."""
    return (
        status.ready == "True"
        and status.latest_ready is not None
        and status.created == status.latest_ready
        and status.traffic.get(status.latest_ready, 0) == percent
    )


def _traffic_back_to(
    services: InferenceServices, namespace: str, name: str, revision: str, timeout_s: float, poll_s: float
) -> tuple[Status | None, str | None]:
    """canaryTrafficPercent 0: KServe sends all traffic back to the revision rolled out before the latest
    one; waits until `revision` has it all."""
    services.set_canary(namespace, name, 0)
    return _wait(
        services,
        namespace,
        name,
        lambda s: s.traffic.get(revision, 0) == 100,
        timeout_s=timeout_s,
        poll_s=poll_s,
    )


def _roll_back_after(
    services: InferenceServices, namespace: str, name: str, before: Status, problem: str, poll_s: float
) -> None:
    where = f"{namespace}/{name}"
    record: dict[str, Any] = {"outcome": "refused", "inference_service": where, "reason": problem}
    stable = before.rolled_out
    if not stable:
        record["rollback"] = "nothing was rolled out before: nothing to roll back to"
        raise RolloutFailed(f"{where}: {problem}; nothing to roll back to", record)
    # (the refused revision may well stay failed: only the traffic counts)
    status, failed = _traffic_back_to(services, namespace, name, stable, ROLLBACK_TIMEOUT_S, poll_s)
    record["rollback"] = {"canaryTrafficPercent": 0, "serving": stable}
    if status is not None:
        record["status"] = status.summary()
    if failed:
        record["rollback"]["problem"] = failed
        raise RolloutFailed(
            f"{where}: {problem}; and the rollback to {stable} did not settle: {failed}", record
        )
    raise RolloutFailed(f"{where}: {problem}; rolled back: {stable} serves all traffic", record)


def roll_back(
    services: InferenceServices, namespace: str, name: str, *, timeout_s: float = 300.0, poll_s: float = 2.0
) -> dict[str, Any]:
    """Sends all traffic back to the revision rolled out before the latest one (canaryTrafficPercent 0):
    the stable revision during a canary, else the previous rolled-out revision."""
    where = f"{namespace}/{name}"
    isvc = services.get(namespace, name)
    if isvc is None:
        raise InputError(f"no InferenceService {where}")
    before = Status.of(isvc)
    if before.latest_ready != before.rolled_out:  # a canary, or a revision rolled back before
        target = before.rolled_out
    elif before.created != before.latest_ready:
        # KServe moves traffic back only from the latest revision, and that one failed (a refused deploy)
        raise InputError(
            f"{where}: the latest revision {before.created} failed (a refused deploy) and "
            f"{before.rolled_out} serves; KServe's rollback cannot step past a failed revision: deploy the "
            "version to go back to (simrec deploy MODEL/VERSION --kserve ...)"
        )
    else:
        target = before.previous
    if not target:
        raise InputError(f"{where}: nothing to roll back to (one revision rolled out so far)")
    status, problem = _traffic_back_to(services, namespace, name, target, timeout_s, poll_s)
    if problem:
        raise InputError(f"{where}: rollback to {target} did not settle: {problem}")
    assert status is not None
    return {
        "outcome": "rolled back",
        "inference_service": where,
        "revision": target,
        "from_revision": before.latest_ready,
        "status": status.summary(),
    }
