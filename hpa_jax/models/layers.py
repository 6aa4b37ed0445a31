"""Building blocks every encoder family shares, set up to compute what PyTorch computes.

Converted timm weights only give timm's logits if padding and normalisation agree exactly:
Flax's "SAME" padding puts the odd pixel of a strided convolution at the end, PyTorch pads
both sides, so every convolution here pads symmetrically as PyTorch does.
"""

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from hpa_jax.collectives import batch_moments
from hpa_jax.errors import ConfigError

# PyTorch's BatchNorm2d defaults (momentum 0.1 means a decay of 0.9 here). Batch statistics
# are averaged over the device mesh axis so training does not depend on how many devices
# the global batch is split over. The variance is E[(x - mean)^2] (two passes, as PyTorch)
# rather than Flax's default E[x^2] - mean^2, which cancels catastrophically in float32 for
# channels whose spread is small next to their mean, and then depends on summation order.
BATCH_NORM_DEFAULTS = dict(momentum=0.9, epsilon=1e-5, use_fast_variance=False)


class BatchNorm(nn.BatchNorm):
    """Flax's BatchNorm (same fields, parameters and batch statistics) with its moments combined
    over `axis_name` by `collectives.batch_moments`: one all-gather forward and one backward (flax's
    `lax.pmean` of the mean and mean square also takes one each way, but its all-reduce adds in a
    different order on one process than across several, where a gather gives the same bits on
    1 process x 8 devices as on 2 x 4). The variance is the two-pass one, on every device and
    combined over devices without cancellation. `axis_name=None`: each device's own moments."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        if mask is not None:
            raise NotImplementedError("masked batch statistics")
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        features = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,))
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            x32 = x.astype(jnp.promote_types(self.dtype or x.dtype, jnp.float32))
            mean = x32.mean(axes)
            var = jnp.square(x32 - mean).mean(axes)
            if self.axis_name is not None and not self.is_initializing():
                mean, var = batch_moments(mean, var, self.axis_name)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        y = x.astype(jnp.promote_types(x.dtype, jnp.float32)) - mean
        mul = lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            mul = mul * self.param("scale", self.scale_init, (features,), self.param_dtype)
        y = y * mul
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (features,), self.param_dtype)
        return jnp.asarray(y, self.dtype or jnp.result_type(x, self.param_dtype))


def scaled(channels: int, width: int) -> int:
    """A width-64 channel count scaled to `width` (the encoders' `width`: 64 is full size, smaller
    widths let tests run the same code tiny), at least 1."""
    return max(1, channels * width // 64)


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


def split_sequential_indices(flax_path, keep=()) -> str:
    """The inverse of `join_sequential_indices`: Flax module names -> the timm module path, each
    `name_<index>` split back into a Sequential index, except the names in `keep` (timm attributes
    that carry an underscore and a digit themselves, e.g. InceptionV4's `branch1_0`)."""
    parts = []
    for name in flax_path:
        base, _, index = name.rpartition("_")
        parts.append(name if name in keep or not (base and index.isdigit()) else f"{base}.{index}")
    return ".".join(parts)


def torch_padding(kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """PyTorch's `padding=k // 2` on both sides of each spatial axis."""
    return tuple((k // 2, k // 2) for k in kernel_size)


def torch_conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] = (1, 1), *,
               padding=None, feature_group_count: int = 1, grouped_conv: str = "auto", **kwargs) -> nn.Conv:
    """nn.Conv padded like PyTorch's usual `padding=k // 2` unless `padding` is given; with
    `feature_group_count` > 1, a grouped convolution run by the `grouped_conv` implementation
    (see GROUPED_CONV_IMPLEMENTATIONS below), with timm's grouped kernel shape whatever it is."""
    if feature_group_count > 1:
        kwargs["conv_general_dilated"] = grouped_conv_general_dilated(grouped_conv)
    return nn.Conv(features, tuple(kernel_size), tuple(strides),
                   padding=torch_padding(kernel_size) if padding is None else padding,
                   feature_group_count=feature_group_count, **kwargs)


# ---- grouped convolutions ---------------------------------------------------------------------
#
# XLA's CPU backend runs a grouped convolution (`feature_group_count` G) by expanding it, and
# rewrites the kernel gradient (`batch_group_count`) into a dilated dense convolution that does
# about G times the work: one SE-ResNeXt 3x3 layer trains ~100x slower than in PyTorch. The same
# arithmetic written as dense convolutions, which XLA runs well, is exact (the same sums, zeros
# added) and fast:
#
# - "block_diagonal": one dense convolution whose kernel is block-diagonal, built from the grouped
#   kernel (zeros off the diagonal blocks). G times the multiply-adds, but one big dense op.
# - "split": the groups taken a few at a time ("super-groups"): each super-group is a dense
#   convolution of its own channel slice with its block-diagonal kernel, and the outputs are
#   concatenated. The wasted work shrinks to the super-group's group count, and each dense op is
#   still wide enough for XLA's kernels. Each super-group spans max(SPLIT_CHANNELS, group width)
#   input channels: on the 2-core CPU this project is measured on (`scripts/benchmark.py models`,
#   its grouped-convolution table), 16 channels was the fastest, or within noise of it, for
#   SE-ResNeXt's group widths 1 to 32, against 8 (many tiny ops) and 32 or 64 (more zeros); its
#   forward + backward then takes 0.4-2x PyTorch's time for the same layer, against 10-400x with "xla".
# - "xla": `feature_group_count` as is. cuDNN runs grouped convolutions natively, so on GPUs (and
#   TPUs) "auto" keeps it: no GPU measurement here says otherwise.
#
# The kernel keeps PyTorch/timm's grouped shape (kh, kw, C_in / G, C_out) under every
# implementation, so parameters, converted weights and layer groups do not depend on the choice.

GROUPED_CONV_IMPLEMENTATIONS = ("auto", "xla", "block_diagonal", "split")
SPLIT_CHANNELS = 16


def resolve_grouped_conv(implementation: str, backend: str | None = None) -> str:
    """The implementation "auto" stands for on `backend` (default: JAX's default backend)."""
    if implementation not in GROUPED_CONV_IMPLEMENTATIONS:
        raise ConfigError(f"model.grouped_conv {implementation!r} is not one of "
                          f"{', '.join(GROUPED_CONV_IMPLEMENTATIONS)}")
    if implementation != "auto":
        return implementation
    return "split" if (backend or jax.default_backend()) == "cpu" else "xla"


def groups_per_split(groups: int, group_width: int, split_channels: int | None = SPLIT_CHANNELS) -> int:
    """Groups in each super-group of "split": the largest divisor of `groups` spanning at most
    max(split_channels, group_width) input channels; all of them when `split_channels` is None."""
    most = groups if split_channels is None else max(1, split_channels // group_width)
    return max(d for d in range(1, min(groups, most) + 1) if groups % d == 0)


def block_diagonal_kernel(kernel: jnp.ndarray, groups: int, in_axis: int, out_axis: int) -> jnp.ndarray:
    """The dense kernel equal to a grouped one: input channel block g (of C_in / G) feeds only
    output block g (of C_out / G). Gradients flow back to the grouped kernel's entries only."""
    k = jnp.moveaxis(kernel, (in_axis, out_axis), (-2, -1))
    *spatial, group_in, out = k.shape
    k = k.reshape(*spatial, 1, group_in, groups, out // groups)
    mask = jnp.eye(groups, dtype=k.dtype).reshape(groups, 1, groups, 1)
    dense = (k * mask).reshape(*spatial, groups * group_in, out)
    return jnp.moveaxis(dense, (-2, -1), (in_axis, out_axis))


def dense_grouped_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                       dimension_numbers=None, feature_group_count=1, *, split_channels=SPLIT_CHANNELS, **kwargs):
    """`lax.conv_general_dilated` with `feature_group_count` groups computed as dense convolutions,
    one per super-group of `groups_per_split(...)` groups ("split"; `split_channels=None` is one
    super-group of them all: "block_diagonal")."""
    conv = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                             lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                             dimension_numbers=dimension_numbers, **kwargs)
    if feature_group_count == 1:
        return conv(lhs, rhs)
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    lhs_feature, (rhs_out, rhs_in), out_feature = dn.lhs_spec[1], dn.rhs_spec[:2], dn.out_spec[1]
    per_split = groups_per_split(feature_group_count, rhs.shape[rhs_in], split_channels)
    splits = feature_group_count // per_split
    outputs = [conv(x, block_diagonal_kernel(k, per_split, rhs_in, rhs_out))
               for x, k in zip(jnp.split(lhs, splits, axis=lhs_feature), jnp.split(rhs, splits, axis=rhs_out))]
    return outputs[0] if splits == 1 else jnp.concatenate(outputs, axis=out_feature)


@functools.lru_cache(maxsize=None)
def grouped_conv_general_dilated(implementation: str) -> Callable:
    """A drop-in for `lax.conv_general_dilated` (as `nn.Conv(conv_general_dilated=...)` calls it)
    that runs a `feature_group_count` > 1 convolution with `implementation`."""
    return {"xla": lax.conv_general_dilated,
            "block_diagonal": functools.partial(dense_grouped_conv, split_channels=None),
            "split": dense_grouped_conv}[resolve_grouped_conv(implementation)]


# ---- max pooling ------------------------------------------------------------------------------

def _pads(padding, window, strides, spatial_shape) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(spatial_shape, window, strides, padding))
    return tuple(tuple(p) for p in padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window: tuple[int, ...], strides: tuple[int, ...], padding) -> jnp.ndarray:
    """`nn.max_pool` on (B, H, W, C) with a gradient XLA's CPU backend runs ~3x faster.

    XLA differentiates a max-pool into `select_and_scatter`, which is slow on CPUs (a ResNet stem's
    pool at 256 px took ~10% of the whole training step). This gradient is the same one: each
    output's cotangent goes to the first maximum of its window in row-major order (as XLA's
    select-and-scatter and PyTorch both choose among ties), found by comparing the window's shifted
    slices with the output, and is put back by interior-padded adds that XLA fuses.
    """
    pads = _pads(padding, window, strides, x.shape[1:3])
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)   # XLA folds it into the pool
    return nn.max_pool(padded, window_shape=window, strides=strides, padding="VALID")   # ONNX exporters' form


def _max_pool_fwd(x, window, strides, padding):
    y = max_pool(x, window, strides, padding)
    return y, (x, y)


def _max_pool_bwd(window, strides, padding, residuals, dy):
    x, y = residuals
    pads = _pads(padding, window, strides, x.shape[1:3])
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    (_, height, width, _), (out_h, out_w) = padded.shape, y.shape[1:3]
    taken = jnp.zeros(y.shape, bool)
    dx = jnp.zeros(padded.shape, dy.dtype)
    zero = jnp.zeros((), dy.dtype)
    for i in range(window[0]):
        for j in range(window[1]):
            end = (x.shape[0], i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, x.shape[3])
            tap = lax.slice(padded, (0, i, j, 0), end, (1, strides[0], strides[1], 1))
            first = (tap == y) & ~taken
            taken = taken | first
            # Output (a, b) read padded[i + a * stride_h, j + b * stride_w]: scatter back to there.
            dx = dx + lax.pad(jnp.where(first, dy, zero), zero,
                              ((0, 0, 0), (i, height - end[1], strides[0] - 1),
                               (j, width - end[2], strides[1] - 1), (0, 0, 0)))
    (top, _), (left, _) = pads
    return (lax.slice(dx, (0, top, left, 0), (x.shape[0], top + x.shape[1], left + x.shape[2], x.shape[3])),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
