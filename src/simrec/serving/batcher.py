"""Dynamic batching of image queries onto model threads. The event loop parses requests and writes
answers; each model thread embeds and searches one batch at a time, and the image queries that arrive
while every model thread is busy form the next batch. TensorFlow and faiss release the GIL while they
compute, so batches on different cores and the event loop overlap. One request at a time is a batch of
one and waits for nothing.

Measured on 2 cores, 8 clients, the 70k benchmark package: batching inside the event loop (the first
design) ~480 req/s; one model thread ~560-640; two model threads ~750-940 (benchmarks/serve.py).

The queue of images waiting for a model thread is bounded, so that under a burst the server answers 503
at once (and the client, or KServe's activator, retries elsewhere or later) instead of letting every
request wait ever longer. The bound follows from a latency budget: the model threads together embed
`model_threads * budget / cost` images within the budget, where `cost` is the measured time per image of
recent batches (so the bound adapts to the model, the catalogue and the machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from simrec.recommender import Neighbour, Recommender

Answer = tuple[list[list[Neighbour]] | None, BaseException | None]
# The cost per image assumed until batches have been measured: a few ms is what the benchmark package's
# model takes on one core (benchmarks/serve.py). The first batches replace it.
FIRST_COST_S = 0.002
SMOOTHING = 0.1  # weight of the newest batch in the moving average of the cost per image


class Overloaded(Exception):
    """The queue is full: the request is refused now (503 + Retry-After) rather than answered late."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"overloaded: {limit} images already wait for the model; retry shortly")
        self.limit = limit


@dataclass
class _Job:
    recommender: Recommender
    pixels: np.ndarray
    k: int
    future: asyncio.Future


def _by_recommender(jobs: list[_Job]) -> list[list[_Job]]:
    """A deploy may switch versions between two requests of one batch: each runs on its own version."""
    groups: dict[int, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(id(job.recommender), []).append(job)
    return list(groups.values())


def _compute(jobs: list[_Job]) -> tuple[list[Answer], float]:
    """On the model thread: touches no asyncio object, returns one answer or error per job, and the
    seconds it took."""
    started = time.perf_counter()
    answers: dict[int, Answer] = {}
    for group in _by_recommender(jobs):
        try:
            k = max(job.k for job in group)
            rows = group[0].recommender.similar_to_pixels(np.concatenate([job.pixels for job in group]), k)
        except Exception as error:  # each waiting request gets it (and answers 500) instead of hanging
            answers.update((id(job), (None, error)) for job in group)
            continue
        start = 0
        for job in group:
            answers[id(job)] = ([row[: job.k] for row in rows[start : start + len(job.pixels)]], None)
            start += len(job.pixels)
    return [answers[id(job)] for job in jobs], time.perf_counter() - started


class Batcher:
    """At most `model_threads` batches are computed at once; requests arriving meanwhile wait for the
    first thread to come free, and go as one batch. At most `limit` images wait: past that, Overloaded.

    latency_budget_s: what queueing may add to a request, from which the bound follows; max_queue: a
    fixed bound instead. on_batch: called with each batch's image count (metrics)."""

    def __init__(
        self,
        model_threads: int = 1,
        thread_setup: Callable[[], None] | None = None,
        latency_budget_s: float = 0.05,
        max_queue: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pending: list[_Job] = []
        self.pending_images = 0
        self._model_threads = model_threads
        self._idle = model_threads
        self._budget_s = latency_budget_s
        self._max_queue = max_queue
        self._cost_s = FIRST_COST_S
        self._on_batch = on_batch
        # thread_setup: per-thread settings the model threads need (faiss's OpenMP thread count)
        self._model_thread = ThreadPoolExecutor(model_threads, "model", initializer=thread_setup)

    @property
    def limit(self) -> int:
        """Images that may wait for a model thread: fixed, or what the threads embed within the budget."""
        if self._max_queue is not None:
            return self._max_queue
        return max(self._model_threads, int(self._model_threads * self._budget_s / self._cost_s))

    async def similar_to_pixels(self, recommender: Recommender, pixels: np.ndarray, k: int) -> list:
        # A request bigger than the whole bound still goes when nothing waits: it is refused only for
        # others' sake, never for its own size (the schema already bounds it).
        if self.pending_images and self.pending_images + len(pixels) > self.limit:
            raise Overloaded(self.limit)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append(_Job(recommender, pixels, k, future))
        self.pending_images += len(pixels)
        if self._idle and len(self._pending) == 1:
            # after the current loop iteration: the requests already read join this batch
            loop.call_soon(self._submit, loop)
        return await future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._pending:
            return
        self._idle -= 1
        jobs, self._pending = self._pending, []
        if self._on_batch is not None:
            self._on_batch(self.pending_images)
        self.pending_images = 0
        done = self._model_thread.submit(_compute, jobs)
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finish, loop, jobs, done))

    def _finish(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], done: Future) -> None:
        answers, seconds = done.result()
        images = sum(len(job.pixels) for job in jobs)
        self._cost_s += SMOOTHING * (seconds / images - self._cost_s)
        for job, (rows, error) in zip(jobs, answers, strict=True):
            if job.future.done():  # the client went away and the request was cancelled
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(rows)
        self._idle += 1
        self._submit(loop)
