"""Metric-learning losses on L2-normalised embeddings."""

from __future__ import annotations

import tensorflow as tf

_FAR = 1e4  # stands in for an infinite similarity bound without producing inf/NaN gradients


def multi_similarity_loss(
    labels: tf.Tensor,
    embeddings: tf.Tensor,
    alpha: float = 2.0,
    beta: float = 50.0,
    lam: float = 0.5,
    epsilon: float = 0.1,
) -> tf.Tensor:
    """Multi-similarity loss (Wang et al., CVPR 2019) over all pairs in the batch.

    Pair mining keeps, for each anchor, the negatives more similar than its hardest positive minus
    epsilon and the positives less similar than its hardest negative plus epsilon; the kept pairs are
    weighted by soft-plus terms with slopes alpha (positives) and beta (negatives) around margin lam.
    Anchors without a positive or a negative in the batch contribute nothing for that side."""
    labels = tf.reshape(labels, [-1, 1])
    similarity = tf.matmul(embeddings, embeddings, transpose_b=True)
    same = tf.equal(labels, tf.transpose(labels))
    not_self = tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool))
    positive = tf.logical_and(same, not_self)
    negative = tf.logical_not(same)

    hardest_positive = tf.reduce_min(tf.where(positive, similarity, _FAR), axis=1, keepdims=True)
    hardest_negative = tf.reduce_max(tf.where(negative, similarity, -_FAR), axis=1, keepdims=True)
    kept_negative = tf.logical_and(negative, similarity + epsilon > hardest_positive)
    kept_positive = tf.logical_and(positive, similarity - epsilon < hardest_negative)

    def soft_plus_sum(mask: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        # log(1 + sum_{mask} exp(logits)), stable: logsumexp over [0, masked logits]
        masked = tf.where(mask, logits, -_FAR)
        zeros = tf.zeros_like(masked[:, :1])
        return tf.reduce_logsumexp(tf.concat([zeros, masked], axis=1), axis=1)

    positive_term = soft_plus_sum(kept_positive, -alpha * (similarity - lam)) / alpha
    negative_term = soft_plus_sum(kept_negative, beta * (similarity - lam)) / beta
    return tf.reduce_mean(positive_term + negative_term)


def cosine_softmax_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
