"""Multi-label losses from logits: per class, E-loss weighted, per sample, hard-sampled.

The loss is kept per sample, shape (B,), so that the caller reduces it after gathering the
global batch: a plain mean, or the paper's hard sampler (`hard_sample_selection`), which must
rank the losses of the whole batch, not of one device's shard.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpa_jax.errors import ConfigError


def effective_number_weights(counts, alpha: float, normalize: bool = True) -> np.ndarray:
    """E-loss class weights 1/Q_n = (1 - alpha) / (1 - alpha**n_c) (Zhang et al. 2021; the same
    formula as Cui et al. 2019's class-balanced loss, whose beta is this alpha).

    `normalize` rescales them to sum to the number of classes, as the class-balanced-loss code
    does, so the weighted loss keeps the scale of the unweighted one and the tuned LRs still
    apply; without it they are the paper's raw 1/Q_n (1 for a class of one sample, 1 - alpha
    for a huge one). alpha = 0 gives unit weights: the plain, unweighted loss.

    A class with no sample (n_c = 0: absent from a small training fold, or one the synthetic
    dataset never draws) would get 1/Q_0 = 1/0; it gets the smallest weight of the classes
    present, that of the commonest. Its column holds only negatives: the model should learn to
    leave it off (weight 0 would leave its logit at chance, labelling every test image with it),
    but the largest weight (that of n_c = 1) would make "never predict it" the loss's main
    concern: on the quickstart, whose data has 18 of the 28 classes, that choice kept
    validation macro-F1 near 0.04 after 9 epochs.

    Float64 numpy: the counts are data fixed before training, not traced values, and
    1 - alpha**n loses digits in float32 for alpha close to 1.
    """
    counts = np.asarray(counts, np.float64)
    if not 0.0 <= alpha < 1.0:
        raise ConfigError(f"E-loss alpha must be in [0, 1), got {alpha}")
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError(f"class counts must be a 1-D array of non-negative numbers, got {counts}")
    if alpha == 0.0:
        return np.ones_like(counts)
    weights = (1.0 - alpha) / (1.0 - alpha ** np.maximum(counts, 1.0))
    if np.any(counts > 0):
        weights = np.where(counts > 0, weights, weights[counts > 0].min())
    return weights * (len(weights) / weights.sum()) if normalize else weights


def _bce(logits, labels, gamma):
    del gamma
    return optax.sigmoid_binary_cross_entropy(logits, labels)


def _focal(logits, labels, gamma):
    """(1 - p_t)**gamma * BCE. optax computes the modulator as exp(gamma * log(1 - p_t)) from
    log-sigmoids, so the loss and its gradient stay finite for any logit."""
    return optax.sigmoid_focal_loss(logits, labels, gamma=gamma)


# name -> (logits, labels, focal gamma) -> (B, C) loss per class. "bce+focal" is the sum, as
# the paper pairs E-loss "together with other losses (focal)".
PER_CLASS_LOSSES: dict[str, Callable] = {
    "bce": _bce,
    "focal": _focal,
    "bce+focal": lambda z, y, gamma: _bce(z, y, gamma) + _focal(z, y, gamma),
}


def per_sample_loss(loss_config, logits: jnp.ndarray, labels: jnp.ndarray, class_weights=None) -> jnp.ndarray:
    """(B, C) logits and {0, 1} labels -> (B,) mean over classes of w_c * l_c.

    The mean over classes (the paper's sum over classes divided by C) makes unit weights equal
    PyTorch's BCEWithLogitsLoss exactly. `class_weights` (C,) come from
    `effective_number_weights(train class counts, loss_config.e_alpha, loss_config.normalize_weights)`;
    a config asking for E-loss without them is an error rather than a silently unweighted loss.
    """
    if loss_config.name not in PER_CLASS_LOSSES:
        raise ConfigError(f"unknown loss.name {loss_config.name!r}; available: {', '.join(PER_CLASS_LOSSES)}")
    if class_weights is None and loss_config.e_alpha:
        raise ConfigError(f"loss.e_alpha={loss_config.e_alpha} asks for E-loss class weights but none were passed "
                          "to per_sample_loss (they need the training class counts)")
    logits = logits.astype(jnp.float32)
    per_class = PER_CLASS_LOSSES[loss_config.name](logits, labels.astype(jnp.float32), loss_config.focal_gamma)
    if class_weights is not None:
        per_class = per_class * jnp.asarray(class_weights, jnp.float32)
    return per_class.mean(axis=-1)


def num_hard_samples(batch_size: int, ratio: float) -> int:
    """K = ceil(ratio * B), at least 1. The product is rounded to 9 decimals first so that a
    ratio like 0.7 keeps 7 of 10 and not 8 (0.7 * 10 is 7.000000000000001 in floats)."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"loss.hard_sample_ratio must be in (0, 1], got {ratio}")
    return max(1, math.ceil(round(ratio * batch_size, 9)))


def hard_sample_selection(per_sample: jnp.ndarray, ratio: float,
                          axis_name: str | None = None) -> tuple[jnp.ndarray, jnp.ndarray, int]:
    """The paper's hard sampler: which K = ceil(ratio * B) samples of the global batch of B have
    the largest losses. Returns (global 0/1 selection (B,), this device's part of it, K); the
    train step backpropagates sum(per_sample * part) / K summed over devices, the mean of the top
    K losses, and every other sample gets exactly zero gradient.

    Inside `shard_map`, `axis_name` names the mesh axis the batch is split over: the losses are
    gathered from every device first, since the top K of a shard are not the top K of the batch.
    With `axis_name=None` `per_sample` is the whole batch. Equal losses are taken lower global
    index first (`jax.lax.top_k`'s order), so the selection is deterministic; ratio 1 takes all.
    """
    if ratio == 1:   # all of them: nothing to rank (and no losses to gather)
        total = per_sample.shape[0] * (jax.lax.axis_size(axis_name) if axis_name is not None else 1)
        return jnp.ones((total,), per_sample.dtype), jnp.ones_like(per_sample), total
    ranked = jax.lax.stop_gradient(per_sample)
    if axis_name is not None:
        ranked = jax.lax.all_gather(ranked, axis_name, tiled=True)
    k = num_hard_samples(ranked.shape[0], ratio)
    _, chosen = jax.lax.top_k(ranked, k)
    selected = jnp.zeros_like(ranked).at[chosen].set(1.0)
    if axis_name is None:
        return selected, selected, k
    shard = per_sample.shape[0]
    return selected, jax.lax.dynamic_slice_in_dim(selected, jax.lax.axis_index(axis_name) * shard, shard), k
