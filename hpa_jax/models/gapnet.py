"""GapNet-PL (Rumetshofer et al., ICLR 2019), the baseline the paper compares against.

A small SELU network of three convolutional blocks. Its defining trait is that it pools
*every* block, not just the last: the global averages of the three blocks' outputs are
concatenated, so the classifier sees fine early features next to coarse late ones.

Layout, as in the official TensorFlow code (`GapNetPL` in ml-jku/gapnet-pl), channel counts
at width 64:

- block1: conv 3x3/2 (32), [extra convs, see below], max-pool 2x2/2  -> pooled
- block2: conv 3x3/2 (64), 3 x conv 3x3 (64), max-pool 2x2/2          -> pooled
- block3: 3 x conv 3x3 (128)                                          -> pooled
- concat(pool(block1), pool(block2), pool(block3)): 224 features

Every convolution has a bias and is followed by SELU; there is no normalisation layer, so
the model has no `batch_stats`. Kernels use LeCun-normal init (fan-in, variance 1/fan_in,
truncated), biases zero, which is what SELU's self-normalisation assumes and what the
official code used (`scaled_elu_initialization`: a truncated normal with stddev
sqrt(1/fan_in); Flax's version rescales the truncated normal to hit that variance exactly).
Convolutions zero-pad one pixel on both sides (the official "ZEROPAD", which is also
PyTorch's `padding=1`); max-pools use TensorFlow's "SAME" as the original did (identical to
"VALID" on even sizes, e.g. 768 -> 384 -> 192 -> 96 -> 48 -> 48).

Fitting the registry's encoder -> head split: the encoder returns the concatenated block
pools shaped (B, 1, 1, num_features). The head's "gap" pooling of that 1x1 map is then the
identity, and head layers ((256, 0.3), (256, 0.3)) give GapNet-PL's FC stack
(FC 256 -> dropout -> FC 256 -> dropout -> FC n_classes). The head's "acp" pooling must
*not* be used with this encoder: on a 1x1 map mean and max coincide, so it only duplicates
every feature. To apply the paper's ACP idea to GapNet, set the encoder's `pool="acp"`
instead, which pools every block with concat(avg, max) (448 features at width 64).

Known differences from the original, all outside this module:
- the original FC layers use SELU with alpha-dropout; `ClassifierHead` uses ReLU with plain
  dropout;
- the original standardised each image channel by its own mean/std (pyll's
  `NormalizeByImage`); the data pipeline here normalises by the dataset mean/std instead.
  `per_image_standardize=True` restores the original: each image's channels are
  standardised over H, W inside the encoder. Since that is invariant to the pipeline's
  per-channel affine normalisation, it equals standardising the raw pixels (on the crop the
  model sees, as the original standardised its random crops).

Zhang et al. 2021 "add some convolutional blocks in the first step, thus passing more
features to the second stage", without saying how many or what they are. Here they are
`extra_first_stage_convs` further 3x3 SELU convolutions (stride 1, block1's width) between
block1's strided convolution and its max-pool; 0 (the default) is the original GapNet-PL.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpa_jax.errors import ConfigError
from hpa_jax.models import layers
from hpa_jax.models.heads import adaptive_concat_pool
from hpa_jax.models.layers import scaled, torch_conv

ENCODER_NAMES = ("gapnet_pl",)
# GapNet-PL has no timm counterpart, so there are no checkpoints to convert.
TIMM_CLASSIFIER = None

# Channels of block1, block2 and block3 at width 64 (full size).
BLOCK_CHANNELS = (32, 64, 128)
# Per-block global pooling: "gap" = mean (the original), "acp" = concat(mean, max).
POOLS = ("gap", "acp")
# Added to the per-image variance: a blank (constant) channel then maps to zeros instead of
# rounding noise blown up, and real channels (std >> 1e-3 in the pipeline's units) are
# unaffected.
STANDARDIZE_EPS = 1e-6

selu_init = nn.initializers.lecun_normal()


class GapNetPLEncoder(nn.Module):
    """GapNet-PL's three SELU conv blocks; returns (B, 1, 1, num_features) block pools.

    Attributes:
      width: 64 is the full-size network; channel counts scale as c * width // 64 (min 1).
      extra_first_stage_convs: 3x3 SELU convolutions added to block1 before its max-pool
        (Zhang et al.'s modification; 0 is the original).
      pool: "gap" (original) averages each block; "acp" concatenates average and max of each.
      per_image_standardize: standardise each image's channels over H, W first (original
        preprocessing; see the module docstring).
      dtype: compute dtype; parameters stay float32 and pooling is computed in float32.
    """

    width: int = 64
    extra_first_stage_convs: int = 0
    pool: str = "gap"
    per_image_standardize: bool = False
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        per_block = sum(scaled(c, self.width) for c in BLOCK_CHANNELS)
        return per_block * (2 if self.pool == "acp" else 1)

    def _global_pool(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.astype(jnp.float32)
        return adaptive_concat_pool(x) if self.pool == "acp" else x.mean(axis=(1, 2))

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        del train  # no batch statistics, no dropout in the encoder
        if self.pool not in POOLS:
            raise ConfigError(f"unknown GapNet-PL pool {self.pool!r}: expected one of {POOLS}")
        if self.extra_first_stage_convs < 0:
            raise ConfigError(f"extra_first_stage_convs must be >= 0, got {self.extra_first_stage_convs}")

        def conv(features: int, strides: int, name: str):
            return torch_conv(features, (3, 3), (strides, strides), use_bias=True, dtype=self.dtype,
                              kernel_init=selu_init, bias_init=nn.initializers.zeros, name=name)

        def max_pool(y):
            return layers.max_pool(y, (2, 2), (2, 2), "SAME")

        if self.per_image_standardize:
            x32 = x.astype(jnp.float32)
            mean = x32.mean(axis=(1, 2), keepdims=True)
            var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
            x = ((x32 - mean) * jax.lax.rsqrt(var + STANDARDIZE_EPS)).astype(self.dtype)

        c1, c2, c3 = (scaled(c, self.width) for c in BLOCK_CHANNELS)
        pooled = []

        x = nn.selu(conv(c1, 2, "block1_conv0")(x))
        # Zhang et al.'s "some convolutional blocks in the first step": the paper gives no count,
        # so 0 (the original GapNet-PL) is the default.
        for i in range(self.extra_first_stage_convs):
            x = nn.selu(conv(c1, 1, f"block1_extra{i}")(x))
        x = max_pool(x)
        pooled.append(self._global_pool(x))

        x = nn.selu(conv(c2, 2, "block2_conv0")(x))
        for i in range(1, 4):
            x = nn.selu(conv(c2, 1, f"block2_conv{i}")(x))
        x = max_pool(x)
        pooled.append(self._global_pool(x))

        for i in range(3):
            x = nn.selu(conv(c3, 1, f"block3_conv{i}")(x))
        pooled.append(self._global_pool(x))

        features = jnp.concatenate(pooled, axis=-1)
        return features[:, None, None, :].astype(self.dtype)


def build_encoder(name: str, *, width: int = 64, dtype=jnp.float32, extra_first_stage_convs: int = 0,
                  pool: str = "gap", per_image_standardize: bool = False) -> GapNetPLEncoder:
    """The registry's constructor; the keyword options beyond `width`/`dtype` are GapNet's own
    (see `GapNetPLEncoder`) and keep their original-network defaults when not given."""
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown GapNet model {name!r}; available: {', '.join(ENCODER_NAMES)}")
    return GapNetPLEncoder(width=width, extra_first_stage_convs=extra_first_stage_convs, pool=pool,
                           per_image_standardize=per_image_standardize, dtype=dtype)


def flax_module_path(torch_module: str) -> str:
    """GapNet-PL has no timm model, so there are no PyTorch weights to map."""
    raise ConfigError(f"GapNet-PL has no timm counterpart: no PyTorch weights to convert "
                      f"(asked for {torch_module!r}); train it from scratch")
