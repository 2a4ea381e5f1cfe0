import numpy as np

from simrec.retrieval import exact
from simrec.retrieval.exact import (
    map_at_k,
    per_class_recall,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
    top_k,
)


def test_top_k_matches_brute_force_and_excludes_self() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    found = top_k(gallery, gallery, 5, exclude_self=True, chunk=64)
    similarity = gallery @ gallery.T
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_array_equal(found, np.argsort(-similarity, axis=1)[:, :5])


def test_a_large_gallery_takes_fewer_queries_at_a_time_with_the_same_answer(monkeypatch) -> None:
    """At 1M items a 2,048-query chunk needed ~32 GB; the chunk shrinks to fit CHUNK_BYTES instead."""
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(500, 8)).astype(np.float32)
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    whole = top_k(queries, gallery, 5)
    chunks = []
    monkeypatch.setattr(exact, "CHUNK_BYTES", 3 * exact.BYTES_PER_PAIR * len(gallery))  # 3 queries a chunk
    argpartition = np.argpartition

    def counting(similarity, *args, **kwargs):
        chunks.append(len(similarity))
        return argpartition(similarity, *args, **kwargs)

    monkeypatch.setattr(np, "argpartition", counting)
    np.testing.assert_array_equal(top_k(queries, gallery, 5), whole)
    assert max(chunks) == 3 and sum(chunks) == len(queries)


def test_recall_at_k() -> None:
    neighbours = np.array([[0, 1], [1, 0], [2, 0]])
    gallery_labels = np.array([5, 6, 7])
    queries = np.array([6, 6, 9])
    assert recall_at_k(neighbours, queries, gallery_labels, 1) == 1 / 3
    assert recall_at_k(neighbours, queries, gallery_labels, 2) == 2 / 3


def test_metrics_on_a_hand_computed_case() -> None:
    # Gallery labels by index: 0:A 1:A 2:B 3:B 4:A (3 A items, 2 B items).
    gallery_labels = np.array([0, 0, 1, 1, 0])
    query_labels = np.array([0, 1])
    # Query A ranks: A, B, A  -> hits 1,0,1; query B ranks: A, A, B -> hits 0,0,1.
    neighbours = np.array([[0, 2, 1], [0, 4, 3]])
    assert recall_at_k(neighbours, query_labels, gallery_labels, 1) == 0.5
    assert recall_at_k(neighbours, query_labels, gallery_labels, 3) == 1.0
    assert precision_at_k(neighbours, query_labels, gallery_labels, 3) == (2 / 3 + 1 / 3) / 2
    # AP@3 for A: (1/1 + 2/3) / min(3, 3) = 5/9; for B: (1/3) / min(3, 2) = 1/6.
    assert abs(map_at_k(neighbours, query_labels, gallery_labels, 3) - (5 / 9 + 1 / 6) / 2) < 1e-12
    metrics = retrieval_metrics(neighbours, query_labels, gallery_labels, recall_ks=(1, 3), k=3)
    assert metrics["recall_at_1"] == 0.5 and metrics["recall_at_3"] == 1.0
    assert per_class_recall(neighbours, query_labels, gallery_labels, 1) == {0: 1.0, 1: 0.0}


def test_map_is_one_for_perfect_rankings_and_zero_without_hits() -> None:
    gallery_labels = np.array([0, 0, 1, 1])
    assert map_at_k(np.array([[0, 1], [2, 3]]), np.array([0, 1]), gallery_labels, 2) == 1.0
    assert map_at_k(np.array([[2, 3]]), np.array([0]), gallery_labels, 2) == 0.0
