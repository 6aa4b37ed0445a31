"""Building blocks every encoder family shares, set up to compute what PyTorch computes.

Converted timm weights only give timm's logits if padding and normalisation agree exactly:
Flax's "SAME" padding puts the odd pixel of a strided convolution at the end, PyTorch pads
both sides, so every convolution here pads symmetrically as PyTorch does.
"""

from typing import Sequence

import flax.linen as nn

# PyTorch's BatchNorm2d defaults (momentum 0.1 means a decay of 0.9 here). Batch statistics
# are averaged over the device mesh axis so training does not depend on how many devices
# the global batch is split over. The variance is E[(x - mean)^2] (two passes, as PyTorch)
# rather than Flax's default E[x^2] - mean^2, which cancels catastrophically in float32 for
# channels whose spread is small next to their mean, and then depends on summation order.
BATCH_NORM_DEFAULTS = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False)
MESH_AXIS = "data"

# PyTorch's kaiming normal (fan_out) conv init, as torchvision's and timm's CNNs use.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def join_sequential_indices(torch_module: str) -> list[str]:
    """timm module path -> Flax module names: each PyTorch Sequential index joins the name before
    it ("features.4.branch1.2.conv" -> ["features_4", "branch1_2", "conv"]), as Flax names one
    module per list entry."""
    path: list[str] = []
    for part in torch_module.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return path


def torch_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """PyTorch's `padding=k // 2` on both sides of each spatial axis."""
    return tuple((k // 2, k // 2) for k in kernel_size)


def torch_conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1), *,
               padding=None, **kwargs) -> nn.Conv:
    """nn.Conv padded like PyTorch's usual `padding=k // 2` unless `padding` is given."""
    return nn.Conv(features, tuple(kernel_size), tuple(strides),
                   padding=torch_padding(kernel_size) if padding is None else padding, **kwargs)
