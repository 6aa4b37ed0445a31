"""Optimiser and learning-rate schedule.

`sgd` is the paper's: momentum SGD with weight decay added to the gradient before momentum, as
torch.optim.SGD does. `adamw` (decoupled decay) converges far faster from random init, which is
what the CPU quickstart needs; the 2018 competition winners trained with Adam too.
"""

import optax

from hpa_jax.errors import ConfigError


def learning_rate_schedule(optim_config, total_steps: int) -> optax.Schedule:
    """Cosine decay from `lr` to `min_lr` over the whole run, stepped per batch."""
    alpha = optim_config.min_lr / optim_config.lr if optim_config.lr else 0.0
    return optax.cosine_decay_schedule(optim_config.lr, max(total_steps, 1), alpha=alpha)


def make_optimizer(optim_config, total_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(optim_config, total_steps)
    if optim_config.name == "sgd":
        return optax.chain(optax.add_decayed_weights(optim_config.weight_decay),
                           optax.sgd(schedule, momentum=optim_config.momentum))
    if optim_config.name == "adamw":
        return optax.adamw(schedule, weight_decay=optim_config.weight_decay)
    raise ConfigError(f"unknown optim.name {optim_config.name!r}: expected 'sgd' or 'adamw'")
