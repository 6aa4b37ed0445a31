"""The training state pytree: params, BatchNorm statistics, optimiser state and step."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from hpa_jax.models import TRACE_SIZE
from hpa_jax.models.convert import apply_pretrained
from hpa_jax.runtime import sharding


class TrainState(train_state.TrainState):
    batch_stats: Any


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, *,
                       image_size: int, in_channels: int, pretrained: str | None = None,
                       model_name: str | None = None) -> TrainState:
    """Initial params and BatchNorm statistics (params do not depend on the image size), the
    encoder's taken from `pretrained` (a `python -m hpa_jax.models.convert` output) if given.
    Encoders without BatchNorm (GapNet-PL) have empty batch statistics."""
    dummy = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
    variables = jax.jit(lambda r: model.init(r, dummy, train=False))(rng)
    if pretrained:
        variables = apply_pretrained(variables, pretrained, model_name)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation, in_channels: int, mesh):
    """The training state's shapes and dtypes, replicated over `mesh`, traced (`jax.eval_shape`)
    without computing or allocating anything: what `--mode=plan` compiles the steps for. Params do
    not depend on the image size traced."""
    abstract = jax.eval_shape(lambda: create_train_state(model, tx, jax.random.key(0), image_size=TRACE_SIZE,
                                                         in_channels=in_channels))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
                        abstract)
