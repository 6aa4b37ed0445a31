"""4-channel ResNets (He et al. 2016) and SE-ResNeXts (the paper's "SENet") in timm's layout.

Depth and width are attributes so that tests and the quickstart can run a tiny network with
the same code as the full-size networks of the paper. Module names follow timm's (`conv1`,
`bn1`, `layer1_0`, `downsample_conv`, `se`...) so that converted weights map by name.
"""

import math
from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.models.layers import (
    BATCH_NORM_DEFAULTS,
    BatchNorm,
    conv_init,
    join_sequential_indices,
    max_pool,
    split_sequential_indices,
    torch_conv,
)

__all__ = ["ENCODER_NAMES", "ResNetEncoder", "build_encoder", "flax_module_path", "timm_module_name"]


class SqueezeExcite(nn.Module):
    """Channel gates from the globally pooled map (Hu et al. 2018): HPA classes differ mostly in
    *which* structures light up, which is a per-channel question. 1x1 convolutions with bias,
    as timm's SEModule, so its weights load unchanged."""

    reduced: int

    @nn.compact
    def __call__(self, x):
        s = x.mean(axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Conv(self.reduced, (1, 1), dtype=x.dtype, name="fc1")(s))
        s = nn.Conv(x.shape[-1], (1, 1), dtype=x.dtype, name="fc2")(s)
        return x * nn.sigmoid(s)


def se_channels(channels: int, ratio: float = 1 / 16, divisor: int = 8) -> int:
    """timm's `make_divisible(channels * ratio, 8, round_limit=0)` for its SE modules."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet18/34)."""

    filters: int
    strides: int
    conv: Callable
    norm: Callable
    expansion = 1

    @nn.compact
    def __call__(self, x, *, train: bool):
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        # Zero-init of the last BN scale makes each block start as the identity (timm's
        # zero_init_last), which trains from scratch noticeably faster.
        y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(y, use_running_average=not train)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="downsample_conv")(x)
            residual = self.norm(name="downsample_bn")(residual, use_running_average=not train)
        return nn.relu(y + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's "ResNet v1.5"), 1x1 expand x4 (ResNet50/101).

    With `cardinality` > 1 the 3x3 is a grouped convolution of `cardinality` groups of
    `base_width`-per-64 channels (ResNeXt), and `squeeze_excite` gates the expanded output
    before the residual sum (SE-ResNeXt), both as timm builds them.
    """

    filters: int
    strides: int
    conv: Callable
    norm: Callable
    cardinality: int = 1
    base_width: int = 64
    squeeze_excite: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x, *, train: bool):
        residual = x
        width = max(1, math.floor(self.filters * self.base_width / 64)) * self.cardinality
        y = self.conv(width, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
        y = self.conv(width, (3, 3), (self.strides, self.strides), feature_group_count=self.cardinality,
                      name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y, use_running_average=not train))
        y = self.conv(self.filters * self.expansion, (1, 1), name="conv3")(y)
        y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(y, use_running_average=not train)
        if self.squeeze_excite:
            y = SqueezeExcite(se_channels(y.shape[-1]), name="se")(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * self.expansion, (1, 1), (self.strides, self.strides),
                                 name="downsample_conv")(x)
            residual = self.norm(name="downsample_bn")(residual, use_running_average=not train)
        return nn.relu(y + residual)


class ResNetEncoder(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max-pool) and four stages; returns the last feature map."""

    stage_sizes: Sequence[int]
    block: Any
    width: int = 64
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS
    grouped_conv: str = "auto"  # how SE-ResNeXt's grouped 3x3s run: layers.GROUPED_CONV_IMPLEMENTATIONS

    @property
    def num_features(self) -> int:
        return self.width * 2 ** (len(self.stage_sizes) - 1) * self.block.expansion

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = partial(torch_conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init,
                       grouped_conv=self.grouped_conv)
        norm = partial(BatchNorm, dtype=self.dtype, axis_name=self.axis_name, **BATCH_NORM_DEFAULTS)
        x = conv(self.width, (7, 7), (2, 2), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x, use_running_average=not train))
        x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(self.width * 2 ** i, strides, conv, norm, name=f"layer{i + 1}_{j}")(x, train=train)
        return x


class SEResNeXtBottleneck(Bottleneck):
    """timm's seresnext50_32x4d block: 32 groups of 4-per-64 channels, squeeze-and-excite."""

    cardinality: int = 32
    base_width: int = 4
    squeeze_excite: bool = True


RESNET_DEPTHS = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
    "seresnext50_32x4d": ((3, 4, 6, 3), SEResNeXtBottleneck),
}
ENCODER_NAMES = tuple(RESNET_DEPTHS)
TIMM_CLASSIFIER = "fc"
HAS_GROUPED_CONVS = True  # build_encoder takes `grouped_conv` (see the registry)


def build_encoder(name: str, *, width: int = 64, dtype=jnp.float32, grouped_conv: str = "auto") -> ResNetEncoder:
    stage_sizes, block = RESNET_DEPTHS[name]
    return ResNetEncoder(stage_sizes=stage_sizes, block=block, width=width, dtype=dtype, grouped_conv=grouped_conv)


_DOWNSAMPLE = {"downsample_0": "downsample_conv", "downsample_1": "downsample_bn"}


def flax_module_path(torch_module: str) -> tuple[str, ...]:
    """timm: `layer1.0.conv1`, `layer1.0.downsample.0`, `layer1.0.se.fc1` ->
    Flax: ("layer1_0", "conv1"), ("layer1_0", "downsample_conv"), ("layer1_0", "se", "fc1")."""
    return tuple(_DOWNSAMPLE.get(name, name) for name in join_sequential_indices(torch_module))


def timm_module_name(flax_path: Sequence[str]) -> str:
    """The inverse of `flax_module_path`: ("layer1_0", "downsample_conv") -> `layer1.0.downsample.0`."""
    inverse = {flax: torch for torch, flax in _DOWNSAMPLE.items()}
    return split_sequential_indices(inverse.get(name, name) for name in flax_path)
