"""Model registry: `create_model(name, ...)` builds encoder + head by timm-style name."""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hpa_jax.errors import ConfigError
from hpa_jax.models.heads import ClassifierHead
from hpa_jax.models.resnet import RESNET_DEPTHS, resnet_encoder

# name -> constructor(name, width=..., dtype=...) returning an encoder module.
ENCODERS: dict[str, Callable[..., nn.Module]] = {name: resnet_encoder for name in RESNET_DEPTHS}


class Classifier(nn.Module):
    """Encoder -> head -> logits (float32). Inputs are normalised float images (B, H, W, C)."""

    encoder: nn.Module
    head: nn.Module

    def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        return self.head(self.encoder(images.astype(self.encoder.dtype), train=train), train=train)


def create_model(name: str, num_classes: int = 28, in_channels: int = 4, *,
                 head_pool: str = "acp", head_layers: Sequence[Sequence[float]] = ((1024, 0.5),),
                 width: int = 64, dtype: Any = "float32") -> Classifier:
    """Builds a classifier. `in_channels` is fixed by the input at `init`; it is accepted here
    so call sites read like timm's `create_model(name, in_chans=4, num_classes=28)`."""
    del in_channels
    if name not in ENCODERS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(ENCODERS))}")
    dtype = jnp.dtype(dtype)
    encoder = ENCODERS[name](name, width=width, dtype=dtype)
    head = ClassifierHead(num_classes=num_classes, pool=head_pool, layers=tuple(map(tuple, head_layers)),
                          dtype=dtype)
    return Classifier(encoder=encoder, head=head)


def create_model_from_config(config) -> Classifier:
    m = config.model
    return create_model(m.name, config.num_classes, config.in_channels, head_pool=m.head.pool,
                        head_layers=m.head.layers, width=m.width, dtype=m.dtype)
