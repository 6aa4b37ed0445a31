"""Optimiser, layer groups and learning-rate schedules.

`sgd` is the paper's: momentum SGD with weight decay (and the optional L1 penalty) added to
the gradient before momentum, as torch.optim.SGD does. `adamw` (decoupled decay) converges far
faster from random init, which is what the CPU quickstart needs; the 2018 competition winners
trained with Adam too.

Layer groups (the paper's "group learning"): the pretrained encoder moves more slowly than the
new head, so each group's LR is the schedule times its multiplier, e.g. [lr/3, lr] is
`group_lr_multipliers=(1/3, 1.0)`. Schedules are stepped per batch; "cosine_restarts" is
PyTorch's CosineAnnealingWarmRestarts (SGDR), the paper's "cycles".
"""

import itertools
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from hpa_jax.errors import ConfigError
from hpa_jax.models import encoder_module_sort_key

OPTIMIZERS = ("sgd", "adamw")                 # optim.name
SCHEDULES = ("cosine", "cosine_restarts")     # optim.schedule


def _natural_key(name: str):
    """"layer3_10" after "layer3_9": numbers compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def param_groups(params, num_groups: int, module_sort_key: Callable[[str], Any] | None = None):
    """A tree like `params` holding each leaf's layer group: 0 (earliest) .. num_groups - 1 (head).

    With one group everything is group 0. Otherwise the head (`params["head"]`) is the last
    group and the encoder's top-level submodules are split into num_groups - 1 contiguous runs
    of as-equal-as-possible size, earlier runs one longer when it does not divide. Submodules are
    ordered by name with numbers compared as numbers (stem conv1/bn1, layer1_0, ..., layer4_2):
    that is the definition order for the encoders here, and unlike dict order it survives jit,
    which returns dicts with sorted keys. Families whose timm names do not sort that way
    (DenseNet's conv0, denseblock1, ..., norm5) give their own `module_sort_key`.
    """
    if num_groups < 1:
        raise ConfigError("optim.group_lr_multipliers needs at least one group")
    if num_groups == 1:
        return jax.tree.map(lambda _: 0, params)
    if set(params) != {"encoder", "head"}:
        raise ConfigError(f"layer groups need params with 'encoder' and 'head' at the top, got {sorted(params)}")
    names = sorted(params["encoder"], key=module_sort_key or _natural_key)
    encoder_groups = num_groups - 1
    if len(names) < encoder_groups:
        raise ConfigError(f"{num_groups} layer groups need {encoder_groups} encoder submodules, "
                          f"the encoder has {len(names)}")
    group_of = {name: i * encoder_groups // len(names) for i, name in enumerate(names)}
    encoder = {name: jax.tree.map(lambda _, g=group_of[name]: g, sub) for name, sub in params["encoder"].items()}
    return {"encoder": encoder, "head": jax.tree.map(lambda _: num_groups - 1, params["head"])}


def _cycle_lengths(first: int, mult: int, total: int) -> list[int]:
    """Lengths first, first * mult, first * mult**2, ... until they cover `total` (at least one)."""
    lengths = [first]
    while sum(lengths) < total:
        lengths.append(lengths[-1] * mult)
    return lengths


def _cosine(lr: float, min_lr: float, steps: int) -> optax.Schedule:
    """lr -> min_lr over `steps`: min_lr + (lr - min_lr) * (1 + cos(pi * t / steps)) / 2."""
    return optax.cosine_decay_schedule(lr, steps, alpha=min_lr / lr if lr else 0.0)


def learning_rate_schedule(optim_config, *, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
    """The base LR (`optim.lr`, the head's) per step; groups multiply it by their multiplier.

    An optional linear warm-up from 0 over `warmup_epochs`, then either one cosine decay to
    `min_lr` over the rest of the run ("cosine") or cycles of `cycle_epochs`, each `cycle_mult`
    times longer than the last, restarting at `lr` ("cosine_restarts"): step for step the values
    of PyTorch's CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) stepped once per batch. The
    last cycle is built whole, so a run that stops mid-cycle follows it until it stops.
    """
    lr, min_lr = optim_config.lr, optim_config.min_lr
    warmup = int(optim_config.warmup_epochs) * steps_per_epoch
    remaining = max(num_epochs * steps_per_epoch - warmup, 1)
    if optim_config.schedule == "cosine":
        lengths = [remaining]
    else:
        lengths = _cycle_lengths(int(optim_config.cycle_epochs) * steps_per_epoch, int(optim_config.cycle_mult),
                                 remaining)
    schedules = [_cosine(lr, min_lr, n) for n in lengths]
    if warmup:
        schedules.insert(0, optax.linear_schedule(0.0, lr, warmup))
        lengths.insert(0, warmup)
    return optax.join_schedules(schedules, list(itertools.accumulate(lengths))[:-1])


def cycle_end_epochs(optim_config, num_epochs: int) -> list[int]:
    """The 1-based epochs at which a cosine cycle ends (its LR at its minimum) within the run,
    for saving one checkpoint per cycle. "cosine" is one cycle ending at `num_epochs`; a
    restart cycle cut short by the end of the run is not listed."""
    if optim_config.schedule == "cosine":
        return [num_epochs]
    warmup = int(optim_config.warmup_epochs)
    lengths = _cycle_lengths(int(optim_config.cycle_epochs), int(optim_config.cycle_mult), num_epochs - warmup)
    return [warmup + end for end in itertools.accumulate(lengths) if warmup + end <= num_epochs]


def _add_l1(l1: float) -> optax.GradientTransformation:
    """Adds the gradient of l1 * |p|, l1 * sign(p), as an L1 penalty in the loss would."""
    return optax.stateless(lambda updates, params: jax.tree.map(lambda g, p: g + l1 * jnp.sign(p), updates, params))


def _group_optimizer(optim_config, lr: optax.Schedule) -> optax.GradientTransformation:
    if optim_config.name == "sgd":
        return optax.chain(_add_l1(optim_config.l1), optax.add_decayed_weights(optim_config.weight_decay),
                           optax.sgd(lr, momentum=optim_config.momentum))
    if optim_config.name == "adamw":
        return optax.chain(_add_l1(optim_config.l1), optax.adamw(lr, weight_decay=optim_config.weight_decay))
    raise ConfigError(f"unknown optim.name {optim_config.name!r}: expected one of {', '.join(OPTIMIZERS)}")


def make_optimizer(optim_config, schedule: optax.Schedule, *,
                   module_sort_key: Callable[[str], Any] | None = None) -> optax.GradientTransformation:
    """One optimiser per layer group (`param_groups`), each on `schedule` times its multiplier.

    The multiplier scales the whole LR, min_lr included (PyTorch's eta_min is shared by all
    groups instead; the two agree for the default min_lr = 0), and for adamw the decoupled
    weight decay too, which is multiplied by the LR as in a PyTorch AdamW param group. Momentum
    and Adam's moments are per parameter and do not depend on it.
    """
    multipliers = tuple(float(m) for m in optim_config.group_lr_multipliers)
    transforms = {group: _group_optimizer(optim_config, lambda step, m=m: m * schedule(step))
                  for group, m in enumerate(multipliers)}
    return optax.multi_transform(transforms, lambda params: param_groups(params, len(multipliers), module_sort_key))


def optimizer_from_config(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """`make_optimizer` for a run's `config.optim`, its layer groups in the forward order of
    `config.model.name`'s encoder."""
    return make_optimizer(config.optim, schedule, module_sort_key=encoder_module_sort_key(config.model.name))
