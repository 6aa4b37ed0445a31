"""4-channel DenseNet-BC (Huang et al. 2017) in timm's layout.

Module names follow timm's `features.*` tree (`conv0`, `denseblock1/denselayer1/norm1`,
`transition1/conv`, `norm5`...) so converted weights map by name. Each timm `norm*` is a
BatchNorm followed by ReLU (timm's BatchNormAct2d); here the ReLU is applied after the
Flax BatchNorm of the same name.

`width` scales the network so tests can run the full-size code tiny: 64 is DenseNet121 as
published (64 stem features, growth rate 32, bottleneck of 4 x 32 channels).
"""

import re
from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.errors import ConfigError
from hpa_jax.models.layers import BATCH_NORM_DEFAULTS, BatchNorm, max_pool, torch_conv

# timm's DenseNet initialises convolutions with kaiming_normal_ in its default fan_in mode,
# not the fan_out of the ResNets: DenseNet's 1x1 convs take up to ~1000 channels in and give
# 128 out, so fan_out would start them with activations several times too large.
densenet_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

# The smallest input densenet121 (as timm's) accepts: stem and max-pool take 29 px to 8 x 8, which
# the three transitions halve to 1 x 1; 28 px leaves a 1 x 1 map before the last transition.
MIN_INPUT_SIZE = 29

# Bottleneck width as a multiple of the growth rate ("BC" variant of the paper).
BN_SIZE = 4


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck), BN-ReLU-3x3 conv; returns only the new feature maps.

    It takes the block's feature maps as a tuple and concatenates them itself, as timm does,
    so that under `nn.remat` only the individual (shared) maps are kept for the backward
    pass, not one concatenation per layer, whose total grows with the square of the depth.
    """

    growth_rate: int
    conv: Callable
    norm: Callable

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], train: bool) -> jnp.ndarray:
        x = jnp.concatenate(features, axis=-1)
        x = nn.relu(self.norm(name="norm1")(x, use_running_average=not train))
        x = self.conv(BN_SIZE * self.growth_rate, (1, 1), name="conv1")(x)
        x = nn.relu(self.norm(name="norm2")(x, use_running_average=not train))
        return self.conv(self.growth_rate, (3, 3), name="conv2")(x)


class DenseBlock(nn.Module):
    """`num_layers` dense layers, each seeing every earlier map of the block."""

    num_layers: int
    growth_rate: int
    conv: Callable
    norm: Callable
    remat: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        # `train` is a Python bool that selects batch or running statistics: static for remat
        # (argument 2, counting the module itself).
        layer = nn.remat(DenseLayer, static_argnums=(2,)) if self.remat else DenseLayer
        features = [x]
        for i in range(self.num_layers):
            features.append(layer(self.growth_rate, self.conv, self.norm,
                                  name=f"denselayer{i + 1}")(tuple(features), train))
        return jnp.concatenate(features, axis=-1)


class DenseTransition(nn.Module):
    """BN-ReLU, 1x1 conv halving the channels, 2x2/2 average pool (floor, as PyTorch's)."""

    features: int
    conv: Callable
    norm: Callable

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = nn.relu(self.norm(name="norm")(x, use_running_average=not train))
        x = self.conv(self.features, (1, 1), name="conv")(x)
        return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def growth_rate(width: int) -> int:
    return max(1, 32 * width // 64)


class DenseNetEncoder(nn.Module):
    """Stem (7x7/2 conv, BN-ReLU, 3x3/2 max-pool), dense blocks with transitions between
    them, then BN-ReLU (timm's `norm5`); returns that last feature map, as timm's
    `forward_features` does.

    `remat=True` recomputes each dense layer in the backward pass instead of storing its
    activations, for 512 px where DenseNet's concatenations are memory hungry: on a 12-layer
    block it cuts what autodiff saves about 6x (XLA's CPU backend may still not show it).
    """

    block_config: Sequence[int] = (6, 12, 24, 16)
    width: int = 64
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS
    remat: bool = False

    @property
    def num_features(self) -> int:
        channels = self.width
        for i, num_layers in enumerate(self.block_config):
            channels += num_layers * growth_rate(self.width)
            if i < len(self.block_config) - 1:
                channels //= 2
        return channels

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        conv = partial(torch_conv, use_bias=False, dtype=self.dtype, kernel_init=densenet_conv_init)
        norm = partial(BatchNorm, dtype=self.dtype, axis_name=self.axis_name, **BATCH_NORM_DEFAULTS)
        k = growth_rate(self.width)
        x = conv(self.width, (7, 7), (2, 2), name="conv0")(x)
        x = nn.relu(norm(name="norm0")(x, use_running_average=not train))
        x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        channels = self.width
        for i, num_layers in enumerate(self.block_config):
            x = DenseBlock(num_layers, k, conv, norm, remat=self.remat,
                           name=f"denseblock{i + 1}")(x, train=train)
            channels += num_layers * k
            if i < len(self.block_config) - 1:
                # Flax would pool a 1-pixel map to an empty one and go on to NaN logits;
                # PyTorch refuses such an input, and so does this.
                if min(x.shape[1:3]) < 2:
                    raise ConfigError(f"input too small for DenseNet: {x.shape[1]}x{x.shape[2]} feature map "
                                      f"before transition{i + 1}, which needs 2x2 (densenet121: images >= {MIN_INPUT_SIZE} px)")
                channels //= 2
                x = DenseTransition(channels, conv, norm, name=f"transition{i + 1}")(x, train=train)
        return nn.relu(norm(name="norm5")(x, use_running_average=not train))


DENSENET_BLOCKS = {
    "densenet121": (6, 12, 24, 16),
}
ENCODER_NAMES = tuple(DENSENET_BLOCKS)
TIMM_CLASSIFIER = "classifier"


def build_encoder(name: str, *, width: int = 64, dtype=jnp.float32, remat: bool = False,
                  block_config: Sequence[int] | None = None) -> DenseNetEncoder:
    """`remat` (model.encoder_options) trades compute for memory at 512-1024 px; `block_config`
    overrides the depth (tests run the same code shallow)."""
    return DenseNetEncoder(block_config=tuple(block_config or DENSENET_BLOCKS[name]), width=width, dtype=dtype,
                           remat=remat)


def flax_module_path(torch_module: str) -> tuple[str, ...]:
    """timm's "features.denseblock1.denselayer1.norm1" -> ("denseblock1", "denselayer1", "norm1"):
    the same tree without timm's `features` Sequential."""
    parts = tuple(torch_module.split("."))
    if parts[:1] != ("features",) or len(parts) < 2:
        raise KeyError(f"not a timm DenseNet feature module: {torch_module!r}")
    return parts[1:]


def timm_module_name(flax_path: Sequence[str]) -> str:
    """The inverse of `flax_module_path`: ("denseblock1", "denselayer1", "norm1") -> timm's
    `features.denseblock1.denselayer1.norm1`."""
    return ".".join(("features", *flax_path))


def module_sort_key(module: str) -> int:
    """Forward position of a top-level module (conv0, norm0, denseblock1, transition1, ...,
    denseblock4, norm5), which name order does not give; layer groups split in this order."""
    match = re.fullmatch(r"(denseblock|transition)(\d+)", module)
    if match:
        return 2 * int(match.group(2)) - (match.group(1) == "denseblock")
    stem_and_end = {"conv0": -2, "norm0": -1, "norm5": 10 ** 6}
    if module not in stem_and_end:
        raise KeyError(f"not a DenseNet top-level module: {module!r}")
    return stem_and_end[module]
