import numpy as np

from simrec.retrieval import recall_at_k, top_k


def test_top_k_matches_brute_force_and_excludes_self() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    found = top_k(gallery, gallery, 5, exclude_self=True, chunk=64)
    similarity = gallery @ gallery.T
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_array_equal(found, np.argsort(-similarity, axis=1)[:, :5])


def test_recall_at_k() -> None:
    neighbours = np.array([[0, 1], [1, 0], [2, 0]])
    gallery_labels = np.array([5, 6, 7])
    queries = np.array([6, 6, 9])
    assert recall_at_k(neighbours, queries, gallery_labels, 1) == 1 / 3
    assert recall_at_k(neighbours, queries, gallery_labels, 2) == 2 / 3
