"""4-channel Inception-v4 (Szegedy et al. 2016) in timm's `inception_v4` layout.

Module names copy timm's state_dict (`features_4/branch1_2/conv` is timm's
`features.4.branch1.2.conv`) so converted weights map by name. Unlike ResNet, most
convolutions and every max-pool here are unpadded ("valid"), as in the TensorFlow original;
only the convolutions timm pads are padded, symmetrically as PyTorch does.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.errors import ConfigError
from hpa_jax.models import layers
from hpa_jax.models.layers import (BATCH_NORM_DEFAULTS, BatchNorm, conv_init, join_sequential_indices, scaled,
                                   split_sequential_indices, torch_conv)

ENCODER_NAMES = ("inception_v4",)
TIMM_CLASSIFIER = "last_linear"

# The unpadded stem and reductions leave nothing of smaller images:
# 75 -> 37 -> 35 -> 17 (Mixed3a) -> 15 -> 7 -> 3 (ReductionA) -> 1 (ReductionB).
MIN_INPUT_SIZE = 75

# timm builds Inception-v4 with BatchNorm eps 1e-3 (TensorFlow's value), not PyTorch's 1e-5.
BATCH_NORM_EPSILON = 1e-3


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> ReLU: timm's ConvNormAct, children `conv` and `bn`."""

    features: int
    kernel_size: Sequence[int]
    strides: int = 1
    padded: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = torch_conv(self.features, self.kernel_size, (self.strides, self.strides),
                       padding=None if self.padded else "VALID", use_bias=False, dtype=self.dtype,
                       kernel_init=conv_init, name="conv")(x)
        x = BatchNorm(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype, name="bn",
                         **{**BATCH_NORM_DEFAULTS, "epsilon": BATCH_NORM_EPSILON})(x)
        return nn.relu(x)


def max_pool(x):
    """timm's `nn.MaxPool2d(3, stride=2)`: unpadded."""
    return layers.max_pool(x, (3, 3), (2, 2), "VALID")


def avg_pool(x):
    """timm's `nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)`: border pixels average
    only the pixels that exist, so the zero padding does not darken the edges."""
    # A VALID pool of the zero-padded map rescaled by each pixel's count (a constant), in the form
    # ONNX exporters take: flax's count_include_pad=False to float32 rounding.
    height, width = x.shape[1:3]
    counts = np.outer(_window_counts(height), _window_counts(width))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    mean = nn.avg_pool(padded, window_shape=(3, 3), strides=(1, 1), padding="VALID")
    return mean * jnp.asarray(9.0 / counts, mean.dtype)[None, :, :, None]


def _window_counts(n: int) -> np.ndarray:
    """How many of a 3-wide window's taps, padded by 1 each side, fall inside a side of n pixels."""
    counts = np.full(n, 3.0)
    counts[0] -= 1
    counts[-1] -= 1
    return counts if n > 1 else np.ones(1)


class Block(nn.Module):
    """Base of the Inception blocks: `conv(name, channels, kernel, ...)` builds a ConvBN with
    timm's channel count scaled by `width`."""

    width: int = 64
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS

    def conv(self, name: str, channels: int, kernel_size=(3, 3), strides: int = 1, padded: bool = False):
        return ConvBN(scaled(channels, self.width), tuple(kernel_size), strides, padded,
                      dtype=self.dtype, axis_name=self.axis_name, name=name)

    def chain(self, x, layers, *, train: bool, prefix: str):
        """A timm nn.Sequential of ConvBNs: children `{prefix}_{i}`."""
        for i, layer in enumerate(layers):
            x = self.conv(f"{prefix}_{i}", *layer)(x, train=train)
        return x


class Mixed3a(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        return jnp.concatenate([max_pool(x), self.conv("conv", 96, strides=2)(x, train=train)], axis=-1)


class Mixed4a(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.chain(x, [(64, (1, 1)), (96, (3, 3))], train=train, prefix="branch0")
        x1 = self.chain(x, [(64, (1, 1)), (64, (1, 7), 1, True), (64, (7, 1), 1, True), (96, (3, 3))],
                        train=train, prefix="branch1")
        return jnp.concatenate([x0, x1], axis=-1)


class Mixed5a(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        return jnp.concatenate([self.conv("conv", 192, strides=2)(x, train=train), max_pool(x)], axis=-1)


class InceptionA(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.conv("branch0", 96, (1, 1))(x, train=train)
        x1 = self.chain(x, [(64, (1, 1)), (96, (3, 3), 1, True)], train=train, prefix="branch1")
        x2 = self.chain(x, [(64, (1, 1)), (96, (3, 3), 1, True), (96, (3, 3), 1, True)],
                        train=train, prefix="branch2")
        # timm's branch3 is Sequential(pool, conv): the conv is its child 1.
        x3 = self.conv("branch3_1", 96, (1, 1))(avg_pool(x), train=train)
        return jnp.concatenate([x0, x1, x2, x3], axis=-1)


class ReductionA(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.conv("branch0", 384, strides=2)(x, train=train)
        x1 = self.chain(x, [(192, (1, 1)), (224, (3, 3), 1, True), (256, (3, 3), 2)],
                        train=train, prefix="branch1")
        return jnp.concatenate([x0, x1, max_pool(x)], axis=-1)


class InceptionB(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.conv("branch0", 384, (1, 1))(x, train=train)
        x1 = self.chain(x, [(192, (1, 1)), (224, (1, 7), 1, True), (256, (7, 1), 1, True)],
                        train=train, prefix="branch1")
        x2 = self.chain(x, [(192, (1, 1)), (192, (7, 1), 1, True), (224, (1, 7), 1, True),
                            (224, (7, 1), 1, True), (256, (1, 7), 1, True)], train=train, prefix="branch2")
        x3 = self.conv("branch3_1", 128, (1, 1))(avg_pool(x), train=train)
        return jnp.concatenate([x0, x1, x2, x3], axis=-1)


class ReductionB(Block):
    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.chain(x, [(192, (1, 1)), (192, (3, 3), 2)], train=train, prefix="branch0")
        x1 = self.chain(x, [(256, (1, 1)), (256, (1, 7), 1, True), (320, (7, 1), 1, True), (320, (3, 3), 2)],
                        train=train, prefix="branch1")
        return jnp.concatenate([x0, x1, max_pool(x)], axis=-1)


class InceptionC(Block):
    """Branches 1 and 2 fork into a 1x3 and a 3x1 conv whose outputs are concatenated; timm
    names those convs without a Sequential (`branch1_1a`, `branch2_3b`...)."""

    TIMM_NAMES = ("branch1_0", "branch1_1a", "branch1_1b", "branch2_0", "branch2_1", "branch2_2", "branch2_3a",
                  "branch2_3b")   # timm attributes, not Sequential indices

    @nn.compact
    def __call__(self, x, *, train: bool):
        x0 = self.conv("branch0", 256, (1, 1))(x, train=train)
        x1 = self.conv("branch1_0", 384, (1, 1))(x, train=train)
        x1 = jnp.concatenate([self.conv("branch1_1a", 256, (1, 3), padded=True)(x1, train=train),
                              self.conv("branch1_1b", 256, (3, 1), padded=True)(x1, train=train)], axis=-1)
        x2 = self.conv("branch2_0", 384, (1, 1))(x, train=train)
        x2 = self.conv("branch2_1", 448, (3, 1), padded=True)(x2, train=train)
        x2 = self.conv("branch2_2", 512, (1, 3), padded=True)(x2, train=train)
        x2 = jnp.concatenate([self.conv("branch2_3a", 256, (1, 3), padded=True)(x2, train=train),
                              self.conv("branch2_3b", 256, (3, 1), padded=True)(x2, train=train)], axis=-1)
        x3 = self.conv("branch3_1", 256, (1, 1))(avg_pool(x), train=train)
        return jnp.concatenate([x0, x1, x2, x3], axis=-1)


# timm's `features` Sequential: three stem convs (channels, stride, padded), then the blocks.
STEM_CONVS = ((32, 2, False), (32, 1, False), (64, 1, True))
FEATURE_BLOCKS = (Mixed3a, Mixed4a, Mixed5a) + (InceptionA,) * 4 + (ReductionA,) + (InceptionB,) * 7 \
    + (ReductionB,) + (InceptionC,) * 3


class InceptionV4Encoder(nn.Module):
    """Stem (three 3x3 convs, Mixed3a-5a), 4 x A, reduction, 7 x B, reduction, 3 x C; returns the
    last feature map, 1/32 of the input (8 x 8 at 299 px)."""

    width: int = 64
    dtype: Any = jnp.float32
    axis_name: str | None = MESH_AXIS

    @property
    def num_features(self) -> int:
        return scaled(1536, self.width)

    @nn.compact
    def __call__(self, x, *, train: bool):
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ConfigError(f"inception_v4 needs images of at least {MIN_INPUT_SIZE} x {MIN_INPUT_SIZE} "
                              f"pixels (its stem and reductions are unpadded); got {x.shape[1]} x {x.shape[2]}")
        common = dict(dtype=self.dtype, axis_name=self.axis_name)
        for i, (channels, strides, padded) in enumerate(STEM_CONVS):
            x = ConvBN(scaled(channels, self.width), (3, 3), strides, padded, name=f"features_{i}",
                       **common)(x, train=train)
        for i, block in enumerate(FEATURE_BLOCKS, len(STEM_CONVS)):
            x = block(self.width, name=f"features_{i}", **common)(x, train=train)
        return x


def build_encoder(name: str, *, width: int = 64, dtype=jnp.float32) -> InceptionV4Encoder:
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown Inception model {name!r}; available: {', '.join(ENCODER_NAMES)}")
    return InceptionV4Encoder(width=width, dtype=dtype)


def flax_module_path(torch_module: str) -> tuple[str, ...]:
    """timm's module path -> the Flax one: each Sequential index joins the name before it
    ("features.4.branch1.2.conv" -> ("features_4", "branch1_2", "conv"))."""
    return tuple(join_sequential_indices(torch_module))


def timm_module_name(flax_path: Sequence[str]) -> str:
    """The inverse of `flax_module_path`, which drops the difference between a Sequential index and
    an underscore in a name: inside an Inception-C block, timm's own branch names are kept."""
    block = flax_path[0].rpartition("_")[2] if flax_path[0].startswith("features_") else ""
    inception_c = block.isdigit() and int(block) >= len(STEM_CONVS) \
        and FEATURE_BLOCKS[int(block) - len(STEM_CONVS)] is InceptionC
    return split_sequential_indices(flax_path, keep=InceptionC.TIMM_NAMES if inception_c else ())
