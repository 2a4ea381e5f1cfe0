"""The evaluate step's pictures: similar items for one test item per class, a t-SNE map of the test
embeddings with DBSCAN's segments, and the metrics charts (model, raw pixels, champion)."""

from __future__ import annotations

from typing import Any

import numpy as np

from simrec.evaluate import report
from simrec.evaluate.measure import Catalogue
from simrec.retrieval.index import search

MAP_SAMPLE = 2000  # test items drawn on the embedding map (t-SNE is quadratic-ish)


def evaluation_figures(
    catalogue: Catalogue,
    vectors: np.ndarray,
    index,
    results: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    from sklearn.cluster import DBSCAN
    from sklearn.manifold import TSNE

    labels = catalogue.labels
    test = catalogue.where("test")
    queries = np.array([test[labels[test] == label][0] for label in np.unique(labels[test])])
    scores, rows = search(index, vectors[queries], 6)
    keep = [[r for r in row if r != own][:5] for row, own in zip(rows, queries, strict=True)]
    keep_scores = [
        [s for s, r in zip(srow, row, strict=True) if r != own][:5]
        for srow, row, own in zip(scores, rows, queries, strict=True)
    ]
    grid = report.similar_items_grid(
        catalogue.pixels[queries],
        labels[queries],
        catalogue.pixels[np.array(keep)],
        labels[np.array(keep)],
        np.array(keep_scores),
    )
    sample = np.random.default_rng(seed).choice(test, size=min(MAP_SAMPLE, len(test)), replace=False)
    points = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(sample) - 1) / 3), random_state=seed)
    points = points.fit_transform(vectors[sample])
    spread = float(np.ptp(points, axis=0).mean())
    clusters = DBSCAN(eps=spread / 40, min_samples=10).fit_predict(points)
    sizes = np.bincount(clusters[clusters >= 0]) if (clusters >= 0).any() else np.array([], int)
    scorers = {"model": results["model"]["all"]["metrics"], "raw pixels": results["pixels"]["all"]["metrics"]}
    if "champion" in results:
        scorers["champion"] = results["champion"]["all"]["metrics"]
    names = ["recall_at_1", "recall_at_5", "recall_at_10", "precision_at_10", "map_at_10"]
    figures = {
        "similar_items.png": grid,
        "embedding_map.png": report.embedding_map(points, labels[sample], clusters),
        "metrics.png": report.metrics_chart(scorers, names),
    }
    if "unseen" in results["model"]:
        unseen = {
            "model": results["model"]["unseen"]["metrics"],
            "raw pixels": results["pixels"]["unseen"]["metrics"],
        }
        figures["metrics_unseen_classes.png"] = report.metrics_chart(unseen, names)
    return {
        "figures": figures,
        "segments": {
            "clusters": len(sizes),
            "sizes": sorted(sizes.tolist(), reverse=True),
            "noise": int((clusters < 0).sum()),
            "points": len(sample),
        },
    }
