"""What the server is serving, and the only code that changes it.

Requests read `state.current` once and use that object to the end, so a switch (one attribute
assignment, atomic in Python) never mixes two versions inside one answer. A deploy (`swap_in`), a rollback
(`swap_back`) and catalogue additions build the next object completely beside the serving one and then
switch; one admin lock keeps them from interleaving. The previous version stays loaded, so a rollback is a
switch too.

A package whose vectors are in a vector engine (retrieval.engine_index) searches its own collection there.
Deploy and rollback also point the catalogue's alias at the collection of the version they switch to, before
switching: when the engine refuses, nothing has changed and the serving version keeps answering. A refresh
upserts the new items into the served collection."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simrec.infra.errors import InputError
from simrec.recommender.package import ITEM_COLUMNS, Recommender
from simrec.retrieval.engine import VectorEngineError
from simrec.retrieval.engine_index import EngineIndex

log = logging.getLogger(__name__)
HISTORY_SIZE = 50
# The one answer to a package the server will not load, whatever the reason (outside the package root,
# missing, not a folder, a file missing or corrupt): different answers would let an admin client map the
# server's file system, and a loader's exception text can hold paths. The reason goes to the server's log.
PACKAGE_REFUSED = (
    "not a loadable recommender package inside the server's package root (the server log says why)"
)


class Refused(Exception):
    """An admin request that changed nothing; the old version keeps serving."""

    def __init__(self, reason: str, status: int = 409) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Served:
    version: str
    package: str
    recommender: Recommender
    loaded_at: str

    @property
    def index_version(self) -> int:
        return self.recommender.index_version

    def describe(self) -> dict[str, Any]:
        index = self.recommender.index
        engine = (
            {"vector_engine": {"uri": index.engine.uri, "collection": index.collection}}
            if isinstance(index, EngineIndex)
            else {}
        )
        return {
            "version": self.version,
            "package": self.package,
            "index_version": self.index_version,
            "items": len(self.recommender.items),
            "model_id": self.recommender.manifest["model_id"],
            "loaded_at": self.loaded_at,
        } | engine


@contextmanager
def _engine_refused(action: str) -> Iterator[None]:
    """A vector engine failure during an admin action as its refusal (503: the engine may come back)."""
    try:
        yield
    except VectorEngineError as exc:
        raise Refused(f"{action} refused, the serving version is unchanged: {exc}", 503) from exc


def _point_alias(recommender: Recommender) -> None:
    """The catalogue's alias to the collection of the version about to serve (engine-backed ones only)."""
    if isinstance(recommender.index, EngineIndex):
        recommender.index.point_alias(recommender.manifest["vector_engine"]["alias"])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ServingState:
    def __init__(
        self,
        model_name: str,
        package_root: Path | None = None,
        runtime: str = "onnx",
        threads: int = 1,
        vector_engine_uri: str | None = None,
    ) -> None:
        """package_root: the folder admin deploys may load packages from (None: none); runtime and
        threads: how packages run their embedding model; vector_engine_uri: where engine-backed packages'
        engine is reached, instead of their manifest's URI (simrec.recommender.package.Recommender)."""
        self.model_name = model_name
        self.runtime = runtime
        self.threads = threads
        self.vector_engine_uri = vector_engine_uri
        self.package_root = package_root.resolve() if package_root else None
        self.current: Served | None = None
        self.previous: Served | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SIZE)
        # Items added to the live index; re-added (embedded with the then-serving model) after a deploy
        # or rollback switches to an index that lacks them, so a refresh is never silently undone.
        self.live_items = pd.DataFrame({column: [] for column in ITEM_COLUMNS})
        self._admin = threading.Lock()

    def _record(self, action: str, version: str | None, outcome: str, reason: str = "", **extra: Any) -> None:
        entry = {"time": _now(), "action": action, "version": version, "outcome": outcome, "reason": reason}
        self.history.append(entry | extra)
        log.info("%s %s: %s %s", action, version, outcome, reason)

    def _locked(self, action: str) -> None:
        if not self._admin.acquire(blocking=False):
            raise Refused(f"{action} refused: another deploy, rollback or catalogue update is in progress")

    def _with_live_items(self, recommender: Recommender) -> Recommender:
        missing = self.live_items[~self.live_items["item_id"].isin(recommender.rows.index)]
        return recommender.with_items(missing) if len(missing) else recommender

    def package_in_root(self, package: str) -> Path:
        """The folder an admin deploy names, resolved (symbolic links and '..' followed) inside
        `package_root`: relative to it, or absolute and under it. Refused (uniformly) otherwise."""
        if self.package_root is None:
            log.warning("deploy of %r refused: this server has no --package-root", package)
            raise Refused(PACKAGE_REFUSED, 400)
        try:
            resolved = (self.package_root / package).resolve()
        except ValueError as exc:  # a NUL byte in the name
            log.warning("deploy of %r refused: %s", package, exc)
            raise Refused(PACKAGE_REFUSED, 400) from exc
        if not resolved.is_relative_to(self.package_root):
            log.warning("deploy of %r refused: %s is outside %s", package, resolved, self.package_root)
            raise Refused(PACKAGE_REFUSED, 400)
        return resolved

    def swap_in(self, package: str, version: str) -> dict[str, Any]:
        """Deploy: loads the package beside the serving version, warms it up, checks its smoke queries, then
        switches. Any failure raises Refused and leaves the serving version as it was."""
        self._locked("deploy")
        try:
            current = self.current
            if current is not None and current.version == version and current.package == package:
                self._record("deploy", version, "unchanged", "already serving this version")
                return {"outcome": "unchanged", "serving": current.describe()}
            try:
                recommender = self._load(package)
                with _engine_refused("deploy"):
                    served = Served(version, package, self._with_live_items(recommender), _now())
                    _point_alias(served.recommender)
            except Refused as refused:
                self._record("deploy", version, "refused", refused.reason, package=package)
                raise
            self.previous, self.current = current, served
            self._record("deploy", version, "serving", package=package)
            return {"outcome": "serving", "serving": served.describe()}
        finally:
            self._admin.release()

    def _load(self, package: str) -> Recommender:
        try:
            if not Path(package).is_dir():  # OSError for a name longer than the file system allows
                raise InputError("not a folder")
            recommender = Recommender(Path(package), self.runtime, self.threads, self.vector_engine_uri)
            # Warm-up: the first call allocates ONNX Runtime's buffers (or traces Keras's tf.function);
            # do it before any user request can wait.
            recommender.similar_to_pixels(np.zeros((1, 28, 28), np.uint8), 5)
            problems = recommender.check_smoke_queries()
        except VectorEngineError as exc:  # names the engine and collection, not the server's files
            log.warning("package %s refused: %s", package, exc)
            raise Refused(f"deploy refused, the serving version is unchanged: {exc}", 503) from exc
        except Exception as exc:  # InputError for a missing file; a corrupt file's loader raises anything
            log.warning("package %s refused: %s: %s", package, type(exc).__name__, exc)
            raise Refused(PACKAGE_REFUSED, 400) from exc
        if problems:
            raise Refused(f"smoke queries answer differently than when the package was built: {problems[:3]}")
        return recommender

    def swap_back(self) -> dict[str, Any]:
        """Rollback: switches back to the version served before the last swap (it stays loaded)."""
        self._locked("rollback")
        try:
            if self.previous is None:
                reason = "no previous version to roll back to"
                self._record("rollback", None, "refused", reason)
                raise Refused(reason)
            back = self.previous
            try:
                with _engine_refused("rollback"):
                    back = Served(back.version, back.package, self._with_live_items(back.recommender), _now())
                    _point_alias(back.recommender)
            except Refused as refused:
                self._record("rollback", back.version, "refused", refused.reason)
                raise
            self.previous, self.current = self.current, back
            self._record("rollback", back.version, "serving")
            return {"outcome": "serving", "serving": back.describe()}
        finally:
            self._admin.release()

    def add_items(self, items: pd.DataFrame) -> dict[str, Any]:
        """Adds the items the live index lacks as its next version (already known ids are skipped)."""
        self._locked("adding items")
        try:
            current = self.current
            if current is None:
                raise Refused("no model is loaded yet", 503)
            new = items[~items["item_id"].isin(current.recommender.rows.index)]
            if len(new) == 0:
                return {"added": 0, "skipped": len(items), "serving": current.describe()}
            with _engine_refused("adding items"):  # InputError (bad PNG, duplicate) changes nothing either
                grown = current.recommender.with_items(new)
            self.current = Served(current.version, current.package, grown, current.loaded_at)
            self.live_items = pd.concat([self.live_items, new[ITEM_COLUMNS]], ignore_index=True)
            self._record(
                "add_items", current.version, "serving", f"{len(new)} items", index=grown.index_version
            )
            return {"added": len(new), "skipped": len(items) - len(new), "serving": self.current.describe()}
        finally:
            self._admin.release()

    def status(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "ready": self.current is not None,
            "current": self.current.describe() if self.current else None,
            "previous": self.previous.describe() if self.previous else None,
            "live_items": len(self.live_items),
            "history": list(self.history)[::-1],
        }
