"""What evaluate shows people: query -> similar items grids, a map of the embedding space with its
DBSCAN segments, metric charts, and one self-contained HTML page holding them with the metric tables."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from simrec.data.fashion_mnist import LABEL_NAMES, label_name
from simrec.infra.plots import plt
from simrec.records import Evaluation


def similar_items_grid(
    query_pixels: np.ndarray,
    query_labels: np.ndarray,
    neighbour_pixels: np.ndarray,
    neighbour_labels: np.ndarray,
    scores: np.ndarray,
) -> Figure:
    """One row per query: the query image, then its neighbours (green title: same label, red: not)."""
    rows, k = neighbour_labels.shape
    figure, axes = plt.subplots(rows, k + 1, figsize=(1.3 * (k + 1), 1.45 * rows), layout="constrained")
    axes = np.atleast_2d(axes)
    for row in range(rows):
        axes[row, 0].imshow(query_pixels[row], cmap="gray_r")
        axes[row, 0].set_title(f"query: {LABEL_NAMES[query_labels[row]]}", fontsize=7, weight="bold")
        for col in range(k):
            label = neighbour_labels[row, col]
            axes[row, col + 1].imshow(neighbour_pixels[row, col], cmap="gray_r")
            colour = "tab:green" if label == query_labels[row] else "tab:red"
            axes[row, col + 1].set_title(
                f"{label_name(label)} {scores[row, col]:.3f}", fontsize=7, color=colour
            )
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("test items (left) and their most similar catalogue items, cosine score", fontsize=9)
    return figure


def embedding_map(points: np.ndarray, labels: np.ndarray, clusters: np.ndarray) -> Figure:
    """t-SNE map coloured by class (left) and by DBSCAN segment (right; grey: noise)."""
    figure, (by_class, by_cluster) = plt.subplots(1, 2, figsize=(12, 5.5), layout="constrained")
    for label in np.unique(labels):
        chosen = labels == label
        by_class.scatter(*points[chosen].T, s=3, label=LABEL_NAMES[label], color=plt.cm.tab10(label))
    by_class.legend(markerscale=4, fontsize=7, loc="best")
    by_class.set_title("embedding map (t-SNE), by class")
    noise = clusters < 0
    by_cluster.scatter(*points[noise].T, s=2, color="lightgrey")
    by_cluster.scatter(*points[~noise].T, s=3, c=clusters[~noise], cmap="tab20")
    sizes = np.bincount(clusters[~noise]) if (~noise).any() else np.array([], int)
    by_cluster.set_title(f"DBSCAN segments: {len(sizes)} clusters, {int(noise.sum())} noise points")
    for axis in (by_class, by_cluster):
        axis.set_xticks([])
        axis.set_yticks([])
    return figure


def metrics_chart(groups: dict[str, dict[str, float]], names: list[str]) -> Figure:
    """Grouped bars: each metric (x) for each scorer (bars), e.g. model / raw pixels / champion."""
    figure, axis = plt.subplots(figsize=(8, 3.8), layout="constrained")
    width = 0.8 / max(len(groups), 1)
    for i, (scorer, metrics) in enumerate(groups.items()):
        values = [metrics.get(name, np.nan) for name in names]
        bars = axis.bar(np.arange(len(names)) + i * width, values, width, label=scorer)
        axis.bar_label(bars, fmt="%.3f", fontsize=6)
    axis.set_xticks(np.arange(len(names)) + width * (len(groups) - 1) / 2, names)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(
    title: str, sections: list[tuple[str, str | Figure | tuple[list[list[Any]], list[str]]]]
) -> str:
    """A self-contained page: each section is (heading, text | figure | (rows, header))."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, Figure):
            parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{_png(content)}'>")
        elif isinstance(content, tuple):
            parts.append(_table(*content))
        else:
            parts.append(f"<p>{html.escape(content)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


Section = tuple[str, str | Figure | tuple[list[list[Any]], list[str]]]


def evaluation_report(evaluation: Evaluation, figures: dict[str, Figure], model_name: str) -> str:
    """Evaluate's page: the gate's decision, the metric tables, the index, the segments, the pictures."""
    gate = evaluation.gate
    verdict = f"{'BLESSED' if gate.blessed else 'NOT BLESSED'} (mode {gate.mode}): " + "; ".join(gate.reasons)
    sections: list[Section] = [("Gate", verdict)]
    sections += _retrieval_tables(evaluation)
    ann = {k: v for k, v in evaluation.metrics.items() if k.startswith(("ann_", "exact_"))}
    rows = [[f"index {k}", v] for k, v in evaluation.index.items()] + [[k, v] for k, v in ann.items()]
    sections.append(("Nearest-neighbour index", (rows, ["measure", "value"])))
    segments = evaluation.segments
    sections.append(
        (
            "Catalogue segments (DBSCAN on the map)",
            f"{segments['clusters']} clusters over {segments['points']} test items, sizes "
            f"{segments['sizes']}, {segments['noise']} noise points",
        )
    )
    sections += [(name.removesuffix(".png").replace("_", " "), figure) for name, figure in figures.items()]
    return html_report(f"{model_name}: evaluation of model {evaluation.model_id[:12]}", sections)


def _retrieval_tables(evaluation: Evaluation) -> list[Section]:
    """Each protocol's metrics for every scorer (model, raw pixels, champion), and recall@1 per class."""
    results = evaluation.results
    names = list(results["model"]["all"]["metrics"])
    sections: list[Section] = []
    for protocol, heading in (("all", "All classes"), ("unseen", "Classes held out of training")):
        if protocol not in results["model"]:
            continue
        rows = [
            [scorer, *(results[scorer][protocol]["metrics"][name] for name in names)] for scorer in results
        ]
        classes = ", ".join(LABEL_NAMES[c] for c in evaluation.training.exclude_classes)
        title = heading + (f" ({classes})" if protocol == "unseen" else "")
        sections.append((f"{title}: test items against the train gallery, cosine", (rows, ["", *names])))
    per_class = [
        [LABEL_NAMES[int(c)], *(results[s]["all"]["per_class_recall_at_1"][c] for s in results)]
        for c in results["model"]["all"]["per_class_recall_at_1"]
    ]
    sections.append(("recall@1 per class", (per_class, ["class", *results])))
    return sections
