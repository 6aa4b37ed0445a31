"""Model registry: `create_model(name, ...)` builds encoder + head by timm-style name.

Each architecture family lives in one module that declares:

- `ENCODER_NAMES`: the timm-style names it builds;
- `build_encoder(name, *, width=64, dtype)`: the encoder module; `__call__(x, *, train)`
  returns the last feature map (B, h, w, C); width 64 is the full-size network, smaller
  widths scale every channel count so tests can run the same code tiny;
- `TIMM_CLASSIFIER`: the prefix of timm's classifier keys (None without a timm twin);
- `flax_module_path(torch_module)`: where a timm module's tensors live in the Flax encoder,
  used by `hpa_jax.models.convert` to match checkpoints by name, and `timm_module_name(flax_path)`
  its inverse (exporting timm weights);
- optionally `module_sort_key(module_name)`, when sorting the encoder's top-level module names
  (numbers as numbers) does not give their forward order, which layer groups rely on;
- optionally `HAS_GROUPED_CONVS = True`, when its encoders have grouped convolutions (built with
  `layers.torch_conv`): `build_encoder` then takes `grouped_conv`, the implementation
  `model.grouped_conv` names (`layers.GROUPED_CONV_IMPLEMENTATIONS`).
"""

from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.errors import ConfigError
from hpa_jax.models import densenet, gapnet, inception, resnet
from hpa_jax.models.heads import ClassifierHead
from hpa_jax.models.layers import resolve_grouped_conv

# A spatial size every encoder accepts (InceptionV4's valid-padded reductions need about 75 px),
# for tracing variable shapes with `jax.eval_shape`; never run at this size just for that.
TRACE_SIZE = 299

FAMILIES: tuple[ModuleType, ...] = (resnet, inception, densenet, gapnet)
FAMILY_OF: dict[str, ModuleType] = {name: family for family in FAMILIES for name in family.ENCODER_NAMES}
# name -> constructor(name, width=..., dtype=...) returning an encoder module.
ENCODERS: dict[str, Callable[..., nn.Module]] = {name: family.build_encoder for name, family in FAMILY_OF.items()}


def encoder_module_sort_key(name: str) -> Callable[[str], Any] | None:
    """The family's key that sorts its top-level encoder modules into forward order (for layer
    groups), or None where natural name order already is forward order."""
    family = FAMILY_OF.get(name)
    return getattr(family, "module_sort_key", None)


class Classifier(nn.Module):
    """Encoder -> head -> logits (float32). Inputs are normalised float images (B, H, W, C)."""

    encoder: nn.Module
    head: nn.Module

    def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        return self.head(self.encoder(images.astype(self.encoder.dtype), train=train), train=train)


def head_spec(head: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """`head` as given to `create_model`: "gap" (timm's own classifier), "acp" (the paper's
    default head), or a mapping/ConfigDict with any of pool, layers, batch_norm."""
    spec = {"pool": "acp", "layers": ((1024, 0.5),), "batch_norm": False}
    if head is None:
        return spec
    if isinstance(head, str):
        if head == "gap":
            return {"pool": "gap", "layers": (), "batch_norm": False}
        return {**spec, "pool": head}
    unknown = set(head) - set(spec)
    if unknown:
        raise ConfigError(f"unknown head option(s) {sorted(unknown)}; expected pool, layers, batch_norm")
    return {**spec, **dict(head)}


def create_model(name: str, num_classes: int = 28, in_channels: int = 4, *,
                 head: str | Mapping[str, Any] | None = None,
                 head_pool: str | None = None, head_layers: Sequence[Sequence[float]] | None = None,
                 width: int = 64, dtype: Any = "float32", grouped_conv: str = "auto",
                 batch_norm_sync: str = "global", encoder_options: Mapping[str, Any] | None = None) -> Classifier:
    """Builds a classifier, as timm's `create_model(name, in_chans=4, num_classes=28)` would.

    `in_channels` is fixed by the input at `init`; it is accepted for call sites that read like
    timm's. `head_pool`/`head_layers` override single fields of `head`. `encoder_options` are a
    family's own keywords (GapNet-PL's `extra_first_stage_convs`, for example). `grouped_conv`
    chooses how grouped convolutions run (same parameters and results, different speed).
    `dtype="auto"` computes in bfloat16 on GPUs and TPUs, float32 on CPUs (`compute_dtype`).
    `batch_norm_sync`: "global" BatchNorms take their moments over the whole batch split over the
    mesh, "device" each device's own (no collectives; the train step then averages the running
    statistics over devices).
    """
    del in_channels
    if name not in ENCODERS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(ENCODERS))}")
    spec = head_spec(head)
    if head_pool is not None:
        spec["pool"] = head_pool
    if head_layers is not None:
        spec["layers"] = head_layers
    dtype = compute_dtype(dtype)
    if batch_norm_sync not in BATCH_NORM_SYNCS:
        raise ConfigError(f"unknown batch_norm_sync {batch_norm_sync!r}; expected one of {', '.join(BATCH_NORM_SYNCS)}")
    axis_name = MESH_AXIS if batch_norm_sync == "global" else None
    resolve_grouped_conv(grouped_conv)  # a misspelt name is an error for every model
    options = dict(encoder_options or {})
    if getattr(FAMILY_OF[name], "HAS_GROUPED_CONVS", False):
        options["grouped_conv"] = grouped_conv
    try:
        encoder = ENCODERS[name](name, width=width, dtype=dtype, **options)
    except TypeError as e:
        raise ConfigError(f"model.encoder_options {dict(encoder_options or {})} do not fit {name}: {e}") from None
    if hasattr(encoder, "axis_name"):   # the families with BatchNorm
        encoder = encoder.clone(axis_name=axis_name)
    return Classifier(encoder=encoder, head=ClassifierHead(
        num_classes=num_classes, pool=spec["pool"], layers=tuple(map(tuple, spec["layers"])),
        batch_norm=bool(spec["batch_norm"]), dtype=dtype, axis_name=axis_name))


BATCH_NORM_SYNCS = ("global", "device")   # model.batch_norm_sync
NATIVE_BFLOAT16 = ("gpu", "tpu")          # backends where "auto" means bfloat16 compute


def compute_dtype(dtype: Any, platform: str | None = None) -> jnp.dtype:
    """`model.dtype` as the dtype the encoder and head compute in: "auto" is bfloat16 on GPUs and
    TPUs (their matrix units' native type, half float32's memory) and float32 on CPUs, where
    bfloat16 is emulated and slower; `platform` defaults to JAX's default backend."""
    if isinstance(dtype, str) and dtype == "auto":
        return jnp.dtype(jnp.bfloat16 if (platform or jax.default_backend()) in NATIVE_BFLOAT16 else jnp.float32)
    return jnp.dtype(dtype)


def create_model_from_config(config) -> Classifier:
    m = config.model
    return create_model(m.name, config.num_classes, config.in_channels, head=dict(m.head),
                        width=m.width, dtype=m.dtype, grouped_conv=m.grouped_conv,
                        batch_norm_sync=m.batch_norm_sync, encoder_options=m.encoder_options)
