"""Dynamic batching of image queries onto model threads. The event loop parses requests and writes
answers; each model thread embeds and searches one batch at a time, and the image queries that arrive
while every model thread is busy form the next batch. ONNX Runtime (or TensorFlow) and faiss release the
GIL while they compute, so batches on different cores and the event loop overlap. One request at a time
is a batch of one and waits for nothing.

Measured on 2 cores, 8 clients, the 70k benchmark package: batching inside the event loop (the first
design) ~480 req/s; one model thread ~560-640; two model threads ~750-940 (benchmarks/serve.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from simrec.recommender.package import Neighbour, Recommender

Answer = tuple[list[list[Neighbour]] | None, BaseException | None]


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


def _compute(jobs: list[_Job]) -> list[Answer]:
    """On the model thread: touches no asyncio object, returns one answer or error per job."""
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
    return [answers[id(job)] for job in jobs]


class Batcher:
    """At most `model_threads` batches are computed at once; requests arriving meanwhile wait for the
    first thread to come free, and go as one batch. (How many may wait: admission.py.)
    on_batch: called with each batch's image count (metrics).

    A model thread that finishes a batch takes the waiting requests as its next batch itself, under a
    lock, and only hands the answers to the event loop: when the next batch waited for the loop instead,
    the thread sat idle while the loop parsed other requests (6-9 % of the model threads' time at 8
    clients, benchmarks/batcher_timeline.py)."""

    def __init__(
        self,
        model_threads: int = 1,
        thread_setup: Callable[[], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pending: list[_Job] = []
        self.pending_images = 0
        self._on_batch = on_batch
        self._idle = model_threads
        self._lock = threading.Lock()  # _pending, pending_images and _idle: the loop's and the threads'
        # thread_setup: per-thread settings the model threads need (faiss's OpenMP thread count)
        self._model_thread = ThreadPoolExecutor(model_threads, "model", initializer=thread_setup)

    async def similar_to_pixels(self, recommender: Recommender, pixels: np.ndarray, k: int) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.append(_Job(recommender, pixels, k, future))
            self.pending_images += len(pixels)
            first = self._idle and len(self._pending) == 1
        if first:
            # after the current loop iteration: the requests already read join this batch
            loop.call_soon(self._start, loop)
        return await future

    def _take(self) -> tuple[list[_Job], int] | None:
        """The waiting requests as the next batch, if a model thread is free (with the lock held)."""
        if not self._pending or not self._idle:
            return None
        self._idle -= 1
        jobs, self._pending = self._pending, []
        images, self.pending_images = self.pending_images, 0
        return jobs, images

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._take()
        if batch is not None:
            self._run(loop, *batch)

    def _run(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], images: int) -> None:
        if self._on_batch is not None:
            self._on_batch(images)
        done = self._model_thread.submit(_compute, jobs)
        done.add_done_callback(lambda _: self._done(loop, jobs, done))

    def _done(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], done: Future) -> None:
        """On the model thread that computed `jobs`: answers to the loop, then the next batch, if any."""
        loop.call_soon_threadsafe(self._finish, jobs, done)
        with self._lock:
            self._idle += 1
            batch = self._take()
        if batch is not None:
            self._run(loop, *batch)

    @staticmethod
    def _finish(jobs: list[_Job], done: Future) -> None:
        for job, (rows, error) in zip(jobs, done.result(), strict=True):
            if job.future.done():  # the client went away and the request was cancelled
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(rows)
