"""4-channel ResNets (He et al. 2016) in the torchvision/timm layout.

Depth and width are attributes so that tests and the quickstart can run a tiny network with
the same code as the full-size ResNet50/101 of the paper. Module names follow timm's
(`conv1`, `bn1`, `layer1_0`, `downsample_conv`...) so that converted weights map by name.
"""

from functools import partial
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's BatchNorm2d defaults (momentum 0.1 means a decay of 0.9 here); the batch
# statistics are averaged over the device mesh axis so training does not depend on how
# many devices the global batch is split over.
BATCH_NORM_DEFAULTS = dict(momentum=0.9, epsilon=1e-5)
MESH_AXIS = "data"

# PyTorch's default conv init (kaiming normal, fan_out) as torchvision's ResNet uses.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


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
    """1x1 reduce, 3x3 (strided, as torchvision's "ResNet v1.5"), 1x1 expand x4 (ResNet50/101)."""

    filters: int
    strides: int
    conv: Callable
    norm: Callable
    expansion = 4

    @nn.compact
    def __call__(self, x, *, train: bool):
        residual = x
        y = self.conv(self.filters, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y, use_running_average=not train))
        y = self.conv(self.filters * self.expansion, (1, 1), name="conv3")(y)
        y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(y, use_running_average=not train)
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

    @property
    def num_features(self) -> int:
        return self.width * 2 ** (len(self.stage_sizes) - 1) * self.block.expansion

    @nn.compact
    def __call__(self, x, *, train: bool):
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=conv_init,
                       padding="SAME")
        norm = partial(nn.BatchNorm, dtype=self.dtype, axis_name=self.axis_name, **BATCH_NORM_DEFAULTS)
        x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x, use_running_average=not train))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = self.block(self.width * 2 ** i, strides, conv, norm, name=f"layer{i + 1}_{j}")(x, train=train)
        return x


RESNET_DEPTHS = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
}


def resnet_encoder(name: str, *, width: int = 64, dtype=jnp.float32) -> ResNetEncoder:
    stage_sizes, block = RESNET_DEPTHS[name]
    return ResNetEncoder(stage_sizes=stage_sizes, block=block, width=width, dtype=dtype)
