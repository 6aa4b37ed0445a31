"""Per-sample multi-label losses from logits.

Losses are returned per sample (summed over classes, averaged over classes for BCE) so that
the caller decides how to reduce them: a plain mean, or the hard sampler's top-K.
"""

import jax.numpy as jnp
import optax

from hpa_jax.errors import ConfigError


def bce_per_sample(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Binary cross-entropy averaged over the classes of each sample, as PyTorch's
    BCEWithLogitsLoss does: (B, C) logits, (B, C) {0,1} labels -> (B,)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)).mean(axis=-1)


PER_SAMPLE_LOSSES = {"bce": bce_per_sample}


def per_sample_loss(name: str, logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    if name not in PER_SAMPLE_LOSSES:
        raise ConfigError(f"unknown train.loss {name!r}; available: {', '.join(PER_SAMPLE_LOSSES)}")
    return PER_SAMPLE_LOSSES[name](logits.astype(jnp.float32), labels)
