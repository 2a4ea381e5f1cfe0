"""The multi-similarity loss against a direct NumPy transcription of the paper's formula, and training
with the multi-similarity loss alone."""

import numpy as np
import pytest
import tensorflow as tf

from simrec.train.loop import build_training_model, make_train_step
from simrec.train.losses import multi_similarity_loss
from simrec.train.params import TrainParams


def paper_ms_loss(
    labels: np.ndarray, x: np.ndarray, alpha: float, beta: float, lam: float, eps: float
) -> float:
    """Wang et al., CVPR 2019, "Multi-Similarity Loss with General Pair Weighting", eqs. 11, 12 and 15,
    written loop by loop. For anchor i, with S the cosine similarities:
    mining (11, 12): a negative pair {i, j} is kept if S_ij > min_{y_k = y_i} S_ik - eps,
                     a positive pair {i, j} is kept if S_ij < max_{y_k != y_i} S_ik + eps;
    loss (15): 1/m sum_i [ 1/alpha log(1 + sum_{k in P_i} exp(-alpha (S_ik - lam)))
                         + 1/beta  log(1 + sum_{k in N_i} exp( beta (S_ik - lam))) ]."""
    s = x @ x.T
    m = len(labels)
    total = 0.0
    for i in range(m):
        positives = [k for k in range(m) if k != i and labels[k] == labels[i]]
        negatives = [k for k in range(m) if labels[k] != labels[i]]
        kept_p = [k for k in positives if negatives and s[i, k] < max(s[i, n] for n in negatives) + eps]
        kept_n = [k for k in negatives if positives and s[i, k] > min(s[i, p] for p in positives) - eps]
        total += np.log(1 + sum(np.exp(-alpha * (s[i, k] - lam)) for k in kept_p)) / alpha
        total += np.log(1 + sum(np.exp(beta * (s[i, k] - lam)) for k in kept_n)) / beta
    return total / m


def _batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3])  # label 3: an anchor without positives
    centres = rng.normal(size=(4, 6))
    x = centres[labels] + 0.8 * rng.normal(size=(len(labels), 6))  # classes overlap: mining matters
    return labels, x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("alpha", "beta", "lam", "eps"), [(2.0, 50.0, 0.5, 0.1), (1.0, 10.0, 0.2, 0.3), (4.0, 40.0, 0.7, 0.0)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_multi_similarity_loss_is_the_papers_formula(seed, alpha, beta, lam, eps) -> None:
    labels, x = _batch(seed)
    expected = paper_ms_loss(labels, x, alpha, beta, lam, eps)
    without_mining = paper_ms_loss(labels, x, alpha, beta, lam, eps=10.0)  # every pair kept
    assert abs(expected - without_mining) > 1e-3, "this batch must have pairs that mining drops"
    got = multi_similarity_loss(tf.constant(labels), tf.constant(x, tf.float32), alpha, beta, lam, eps)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_training_with_the_multi_similarity_loss_alone() -> None:
    params = TrainParams.component_defaults(
        architecture="seed", embedding_dim=8, dropout=0.0, loss="ms", batch_size=32
    )
    tf.keras.utils.set_random_seed(0)
    _, model = build_training_model(params)
    head = model.get_layer("cosine_softmax").get_weights()
    step = make_train_step(model, tf.keras.optimizers.Adam(1e-3), params, distributed=False)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 8).astype(np.int32)
    images = (rng.uniform(0, 60, (32, 28, 28, 1)) + 150 * (labels[:, None, None, None] % 2)).astype(
        np.float32
    )
    losses = [float(step(tf.constant(images), tf.constant(labels))) for _ in range(15)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.01, losses  # it learns
    for before, after in zip(head, model.get_layer("cosine_softmax").get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the head is not trained under `ms` alone
