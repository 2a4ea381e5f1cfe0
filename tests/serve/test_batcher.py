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

from simrec.recommender.package import Neighbour
from simrec.serving.admission import FIRST_RATE, Admission
from simrec.serving.batcher import Batcher


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


def test_batch_sizes_are_reported():
    batches: list[int] = []
    asyncio.run(ask_all(Batcher(1, on_batch=batches.append), [Recording()], 12))
    assert batches == [12]


def test_admission_sheds_past_a_fixed_bound_and_frees_places():
    admission = Admission(1, 0.05, max_in_flight=2)
    assert (admission.admit(), admission.admit(), admission.admit()) == (True, True, False)
    admission.done(0.01)
    assert admission.in_flight == 1 and admission.admit()


def answer_all(admission: Admission, seconds: float, count: int, concurrent: int) -> None:
    """`count` answers taking `seconds` each, with `concurrent` requests kept in flight (or the bound)."""
    for _ in range(count):
        while admission.in_flight < concurrent and admission.admit():
            pass
        admission.done(seconds)


def test_the_admission_bound_follows_the_latency_budget():
    admission = Admission(2, latency_budget_s=0.05)
    first = admission.limit
    assert first == int(FIRST_RATE * 0.05)
    answer_all(admission, 0.01, 500, concurrent=4)  # fast answers, the bound not in use: it stays
    assert admission.limit == first
    answer_all(admission, 0.01, 2000, concurrent=1000)  # fast answers with the bound full: it grows
    grown = admission.limit
    assert grown > first + 20
    answer_all(admission, 0.2, 10, concurrent=1000)  # a burst of slow answers is one signal
    assert abs(admission.limit - 0.9 * grown) <= 1
    answer_all(admission, 0.2, 5000, concurrent=1000)  # answers keep missing the budget: down to the floor
    assert admission.limit == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--model-threads", "0"], {}, "argument --model-threads: must be at least 1, got 0"),
        (["--threads", "two"], {}, "argument --threads: not an integer: 'two'"),
        (["--max-body-bytes", "0"], {}, "argument --max-body-bytes: must be at least 1, got 0"),
        (["--max-admin-body-bytes", "-5"], {}, "argument --max-admin-body-bytes: must be at least 1, got -5"),
        (["--max-in-flight", "0"], {}, "argument --max-in-flight: must be at least 1, got 0"),
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
