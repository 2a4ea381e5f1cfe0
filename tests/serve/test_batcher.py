"""The batcher's scheduling, with stand-in recommenders that record what they were asked (the served
model's answers through batching are tested over HTTP in test_api.py), and the thread counts' checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serve_helpers import free_port

from simrec.recommender import Neighbour
from simrec.serving.batcher import FIRST_COST_S, Batcher, Overloaded


class Recording:
    """Answers each image with neighbours named after its first pixel; records batch sizes and how many
    batches ran at once."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.batches: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def similar_to_pixels(self, pixels: np.ndarray, k: int) -> list[list[Neighbour]]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batches.append(len(pixels))
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        if self.fail:
            raise RuntimeError("broken model")
        return [[Neighbour(f"{image[0, 0]}-{i}", None, None, 1.0) for i in range(k)] for image in pixels]


def image(value: int) -> np.ndarray:
    return np.full((1, 28, 28), value, np.uint8)


async def ask_all(batcher: Batcher, recommenders: list, count: int, apart: float = 0.0) -> list:
    """`count` queries, the n-th sent n x `apart` seconds after the first."""

    async def ask(n: int) -> list:
        await asyncio.sleep(n * apart)
        return await batcher.similar_to_pixels(recommenders[n % len(recommenders)], image(n), 1 + n % 3)

    return await asyncio.gather(*(ask(n) for n in range(count)), return_exceptions=True)


@pytest.mark.parametrize("model_threads", [1, 2])
def test_concurrent_queries_are_batched_at_most_model_threads_at_once(model_threads):
    recommender = Recording(seconds=0.02)
    answers = asyncio.run(ask_all(Batcher(model_threads), [recommender], 20, apart=0.004))
    assert [[n.item_id for n in answer[0]] for answer in answers] == [
        [f"{n}-{i}" for i in range(1 + n % 3)] for n in range(20)
    ]
    assert recommender.most_at_once == model_threads
    assert sum(recommender.batches) == 20
    assert len(recommender.batches) < 20  # queries that waited for a free model thread went together
    assert recommender.batches[0] == 1  # the first query waited for nothing


def test_queries_read_in_one_loop_iteration_go_as_one_batch():
    recommender = Recording()
    asyncio.run(ask_all(Batcher(2), [recommender], 12))
    assert recommender.batches == [12]


def test_a_failing_version_fails_only_its_own_queries():
    """A deploy can switch versions between the queries of one batch: each version answers its own."""
    good, broken = Recording(), Recording(fail=True)
    answers = asyncio.run(ask_all(Batcher(1), [good, broken], 10))
    for n, answer in enumerate(answers):
        if n % 2:
            assert isinstance(answer, RuntimeError)
        else:
            assert answer[0][0].item_id == f"{n}-0"


def test_past_the_bound_queries_are_shed_at_once_and_the_queue_recovers():
    recommender = Recording(seconds=0.05)
    batches: list[int] = []
    batcher = Batcher(1, max_queue=4, on_batch=batches.append)
    answers = asyncio.run(ask_all(batcher, [recommender], 10))
    shed = [n for n, answer in enumerate(answers) if isinstance(answer, Overloaded)]
    assert shed == [4, 5, 6, 7, 8, 9] and recommender.batches == batches == [4]
    assert batcher.pending_images == 0
    # nothing waits any more: the next burst within the bound is answered in full
    assert not [a for a in asyncio.run(ask_all(batcher, [recommender], 4)) if isinstance(a, Exception)]


def test_one_request_larger_than_the_bound_goes_when_nothing_waits():
    batcher = Batcher(1, max_queue=2)
    pixels = np.zeros((5, 28, 28), np.uint8)
    assert len(asyncio.run(batcher.similar_to_pixels(Recording(), pixels, 1))) == 5


def test_the_bound_follows_the_latency_budget_and_the_measured_cost():
    batcher = Batcher(2, latency_budget_s=0.2)
    assert batcher.limit == int(2 * 0.2 / FIRST_COST_S)

    async def one_at_a_time(recommender: Recording, count: int) -> None:
        for n in range(count):
            await batcher.similar_to_pixels(recommender, image(n), 1)

    # a model taking 50 ms per image: two threads embed 8 within 200 ms
    asyncio.run(one_at_a_time(Recording(seconds=0.05), 40))
    assert 8 <= batcher.limit <= 9


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--model-threads", "0"], {}, "argument --model-threads: must be at least 1, got 0"),
        (["--threads", "two"], {}, "argument --threads: not an integer: 'two'"),
        (["--max-body-bytes", "0"], {}, "argument --max-body-bytes: must be at least 1, got 0"),
        (["--max-admin-body-bytes", "-5"], {}, "argument --max-admin-body-bytes: must be at least 1, got -5"),
        (["--max-queue", "0"], {}, "argument --max-queue: must be at least 1, got 0"),
        (["--latency-budget-ms", "0"], {}, "argument --latency-budget-ms: must be a finite number above 0"),
        (["--latency-budget-ms", "nan"], {}, "argument --latency-budget-ms: must be a finite number above 0"),
        (
            ["--switch-interval-ms", "inf"],
            {},
            "argument --switch-interval-ms: must be a finite number above 0",
        ),
        (["--port", "70000"], {}, "argument --port: a port is 1-65535, got 70000"),
        (
            [],
            {"SIMREC_SERVE_TOKEN": "same", "SIMREC_ADMIN_TOKEN": "same"},
            "SIMREC_ADMIN_TOKEN must differ from SIMREC_SERVE_TOKEN",
        ),
        ([], {"SIMREC_MODEL_THREADS": "abc"}, "$SIMREC_MODEL_THREADS: not an integer: 'abc'"),
        ([], {"SIMREC_MODEL_THREADS": "-1"}, "$SIMREC_MODEL_THREADS: must be at least 1, got -1"),
    ],
)
def test_bad_options_are_refused_before_the_server_starts(args, env, message, tmp_path):
    auth = [] if "SIMREC_SERVE_TOKEN" in env else ["--no-auth"]
    command = [sys.executable, "-m", "simrec", "serve", *auth, "--port", str(free_port()), *args]
    finished = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0
    assert message in finished.stderr and "Traceback" not in finished.stderr
