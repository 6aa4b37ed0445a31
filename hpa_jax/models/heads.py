"""Classification heads: the paper's ACP + buffering layers, and plain GAP for the ablation.

ACP (adaptive concat pooling) keeps both the mean response of a feature map and its peak:
HPA patterns such as centrosomes or nuclear bodies are a few bright pixels that global
average pooling alone dilutes away.
"""

from functools import partial
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.errors import ConfigError
from hpa_jax.models.layers import BATCH_NORM_DEFAULTS, BatchNorm

POOLS = ("acp", "gap")   # model.head.pool


def adaptive_concat_pool(x: jnp.ndarray) -> jnp.ndarray:
    """concat(global average, global max) over H, W: (B, H, W, C) -> (B, 2C), average first
    as the 2018 winner did (fastai puts max first)."""
    return jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)


class ClassifierHead(nn.Module):
    """Pooling, then buffering FC layers (units, dropout) with ReLU, then the logits.

    `pool="acp"` with `layers=((1024, 0.5),)` is the paper's ResNet50 head;
    `pool="gap"` with no layers is the original backbone's classifier.

    `batch_norm=True` is the 2018 winner's head: every FC layer, the logits included, is
    preceded by BatchNorm and dropout (BN -> dropout -> FC -> ReLU, ..., BN -> dropout -> FC),
    the last dropout being the last layer's rate. BatchNorm there keeps the concatenated max
    and average features, which have very different scales, on one footing.
    """

    num_classes: int
    pool: str = "acp"
    layers: Sequence[Sequence[float]] = ((1024, 0.5),)
    batch_norm: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS   # the BatchNorms' (`batch_norm`); None: each device's own moments

    @nn.compact
    def __call__(self, features: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.pool == "acp":
            h = adaptive_concat_pool(features)
        elif self.pool == "gap":
            h = features.mean(axis=(1, 2))
        else:
            raise ConfigError(f"unknown head pool {self.pool!r}: expected one of {', '.join(POOLS)}")
        if self.batch_norm:
            norm = partial(BatchNorm, use_running_average=not train, dtype=self.dtype,
                           axis_name=self.axis_name, **BATCH_NORM_DEFAULTS)
            rate = 0.0
            for i, (units, rate) in enumerate(self.layers):
                h = nn.Dropout(float(rate), deterministic=not train)(norm(name=f"buffer{i}_bn")(h))
                h = nn.relu(nn.Dense(int(units), dtype=self.dtype, name=f"buffer{i}")(h))
            h = nn.Dropout(float(rate), deterministic=not train)(norm(name="fc_bn")(h))
        else:
            for i, (units, rate) in enumerate(self.layers):
                h = nn.Dense(int(units), dtype=self.dtype, name=f"buffer{i}")(h)
                h = nn.relu(h)
                h = nn.Dropout(float(rate), deterministic=not train)(h)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(h)
        return logits.astype(jnp.float32)
