"""Dynamic batching of image queries: the image requests that reached the model step in the same
event-loop iteration are embedded and searched as one batch. On a small CNN a call costs mostly fixed
overhead (8 images take ~2.5x the time of 1), so under concurrent load this multiplies throughput, and
with one request at a time it adds nothing (the batch is that request).

It runs in the event loop itself. A worker thread was tried first (its model call would overlap HTTP
handling on the other core) and measured slower at 8 clients: each hand-off of the GIL between the
loop and the worker can wait a whole switch interval under load."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from simrec.recommender import Neighbour, Recommender


@dataclass
class _Job:
    recommender: Recommender
    pixels: np.ndarray
    k: int
    future: asyncio.Future


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _run_group(group: list[_Job]) -> None:
    try:
        k = max(job.k for job in group)
        answers = group[0].recommender.similar_to_pixels(np.concatenate([job.pixels for job in group]), k)
    except Exception as error:  # each waiting request gets it (and answers 500) instead of hanging
        for job in group:
            _settle(job.future, None, error)
        return
    start = 0
    for job in group:
        rows: list[list[Neighbour]] = [row[: job.k] for row in answers[start : start + len(job.pixels)]]
        start += len(job.pixels)
        _settle(job.future, rows, None)


def _by_recommender(jobs: list[_Job]) -> list[list[_Job]]:
    """A deploy may switch versions between two requests of one batch: each runs on its own version."""
    groups: dict[int, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(id(job.recommender), []).append(job)
    return list(groups.values())


class Batcher:
    """The model call is scheduled right after the requests of the current loop iteration (call_soon)
    and blocks the loop for its ~1-3 ms."""

    def __init__(self) -> None:
        self._pending: list[_Job] = []

    async def similar_to_pixels(self, recommender: Recommender, pixels: np.ndarray, k: int) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Job(recommender, pixels, k, future))
        return await future

    def _flush(self) -> None:
        jobs, self._pending = self._pending, []
        for group in _by_recommender(jobs):
            _run_group(group)
