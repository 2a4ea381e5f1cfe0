"""Which lines of a step's output a quiet `simrec run` shows."""

import pytest

from simrec.infra.progress import MARKER, progress_text


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (f"{MARKER}tables train v0 (200 rows)\n", "tables train v0 (200 rows)"),
        ("[0]<stdout>:epoch 1/2: loss 3.81, val recall@1 0.83", "epoch 1/2: loss 3.81, val recall@1 0.83"),
        ("epoch 1/1: loss 3.67, 443 img/s", "epoch 1/1: loss 3.67, 443 img/s"),
        ("2026-11-27 12:00:00,000 INFO hyperopt.tpe: TPE using 1/1 trials with best loss inf", None),
        ("26/11/27 12:09:39 WARN NativeCodeLoader: Unable to load native-hadoop library", None),
        ("E0000 cuda_dnn.cc:9261] Unable to register cuDNN factory", None),
        ("io.delta#delta-spark_2.12 added as a dependency", None),
    ],
)
def test_progress_lines_are_recognised(line: str, shown: str | None) -> None:
    assert progress_text(line) == shown
