"""Pictures of results, logged as MLflow artifacts: what people would rather see than read."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # steps run headless

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def training_curves(history: list[dict[str, float]]) -> Figure:
    """Train loss and validation recall@1 by epoch."""
    epochs = [h["epoch"] for h in history]
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    loss_axis.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_axis.set(title="train loss", xlabel="epoch")
    recall_axis.plot(epochs, [h["val_recall_at_1"] for h in history], marker="o", color="tab:green")
    recall_axis.set(title="validation recall@1", xlabel="epoch")
    for axis in (loss_axis, recall_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def trial_scores(results: list[dict[str, Any]]) -> Figure:
    """Each tuning trial's validation recall@1 in the order trials finished; failures marked at zero."""
    figure, axis = plt.subplots(figsize=(6, 3.5), layout="constrained")
    scores = [-r["loss"] if r.get("status") == "ok" else None for r in results]
    ok = [(i + 1, s) for i, s in enumerate(scores) if s is not None]
    failed = [i + 1 for i, s in enumerate(scores) if s is None]
    if ok:
        axis.plot(*zip(*ok, strict=True), "o", label="trial")
        best_so_far, best = [], float("-inf")
        for _, score in ok:
            best = max(best, score)
            best_so_far.append(best)
        axis.step([i for i, _ in ok], best_so_far, where="post", label="best so far")
    if failed:
        axis.plot(failed, [0] * len(failed), "x", color="tab:red", label="failed")
    axis.set(title="tuning trials", xlabel="trial", ylabel="validation recall@1")
    axis.legend()
    axis.grid(alpha=0.3)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure
