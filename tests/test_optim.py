"""Schedules against PyTorch's CosineAnnealingWarmRestarts definition, layer groups, and the
PyTorch-style SGD update with weight decay and L1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default, resnet50
from hpa_jax.training import optim
from hpa_jax.config.validate import validate
from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model


def optim_config(**overrides):
    c = default.get_config().optim
    c.update(overrides)
    return c


def torch_warm_restarts(step, base, t_0, t_mult, eta_min):
    """CosineAnnealingWarmRestarts as documented: T_cur counts steps since the last restart,
    T_i is the current cycle length, multiplied by T_mult at each restart; float64."""
    t_cur, t_i = step, t_0
    while t_cur >= t_i:
        t_cur, t_i = t_cur - t_i, t_i * t_mult
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


@pytest.mark.parametrize("schedule,cycle_epochs,cycle_mult,min_lr,warmup_epochs", [
    ("cosine_restarts", 2, 1, 0.0, 0),
    ("cosine_restarts", 2, 1, 1e-3, 0),
    ("cosine_restarts", 1, 2, 0.0, 0),
    ("cosine_restarts", 1, 2, 1e-3, 2),
    ("cosine", 0, 0, 1e-3, 0),
    ("cosine", 0, 0, 0.0, 1),
])
def test_schedule_matches_pytorch_warm_restarts(schedule, cycle_epochs, cycle_mult, min_lr, warmup_epochs):
    steps_per_epoch, num_epochs, lr = 5, 9, 0.02
    config = optim_config(lr=lr, schedule=schedule, cycle_epochs=max(cycle_epochs, 1), cycle_mult=max(cycle_mult, 1),
                          min_lr=min_lr, warmup_epochs=warmup_epochs)
    values = np.asarray(optim.learning_rate_schedule(config, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs)(
        jnp.arange(steps_per_epoch * num_epochs)))
    warmup = warmup_epochs * steps_per_epoch
    # "cosine" is a single cycle as long as the rest of the run.
    t_0 = cycle_epochs * steps_per_epoch if schedule == "cosine_restarts" else steps_per_epoch * num_epochs - warmup
    expected = [lr * step / warmup if step < warmup else
                torch_warm_restarts(step - warmup, lr, t_0, max(cycle_mult, 1), min_lr)
                for step in range(steps_per_epoch * num_epochs)]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-9)


def test_cycle_end_epochs():
    assert optim.cycle_end_epochs(resnet50.get_config().optim, 12) == [4, 8, 12]
    doubling = optim_config(schedule="cosine_restarts", cycle_epochs=2, cycle_mult=2)
    assert optim.cycle_end_epochs(doubling, 14) == [2, 6, 14]
    doubling.warmup_epochs = 1
    assert optim.cycle_end_epochs(doubling, 14) == [3, 7]
    assert optim.cycle_end_epochs(optim_config(schedule="cosine"), 12) == [12]
    for field, value in (("cycle_mult", 0), ("schedule", "step"), ("warmup_epochs", -1)):
        config = default.get_config()
        config.optim[field] = value
        with pytest.raises(ConfigError, match=f"optim.{field}="):   # the config's check, before any schedule
            validate(config)


@pytest.fixture(scope="module")
def params():
    """A narrow ResNet18's param tree (dicts with sorted keys, as jit returns them), filled with
    random values: shapes come from eval_shape, which skips compiling the model."""
    model = create_model("resnet18", width=4, head_layers=((8, 0.0),))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), train=False))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)


def test_layer_groups_split_the_encoder_in_order(params):
    groups = optim.param_groups(params, 3)
    by_module = {name: set(jax.tree.leaves(sub)) for name, sub in groups["encoder"].items()}
    assert by_module == {"conv1": {0}, "bn1": {0}, "layer1_0": {0}, "layer1_1": {0}, "layer2_0": {0},
                         "layer2_1": {1}, "layer3_0": {1}, "layer3_1": {1}, "layer4_0": {1}, "layer4_1": {1}}
    assert set(jax.tree.leaves(groups["head"])) == {2}
    assert set(jax.tree.leaves(optim.param_groups(params, 1))) == {0}
    # Numbers in names compare as numbers whatever the dict order: layer1_10 comes after layer1_9.
    fake = {"encoder": {f"layer1_{j}": {"kernel": 0.0} for j in (10, 2, 0, 11, 1, 9, 3, 8, 4, 7, 5, 6)},
            "head": {"fc": {"kernel": 0.0}}}
    fake_groups = optim.param_groups(fake, 3)["encoder"]
    assert [j for j in range(12) if fake_groups[f"layer1_{j}"]["kernel"] == 0] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ConfigError):
        optim.param_groups(fake, 14)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_zero_multiplier_freezes_the_encoder(params, name):
    config = optim_config(name=name, group_lr_multipliers=(0.0, 1.0), weight_decay=1e-2, l1=1e-3)
    tx = optim.make_optimizer(config, optax.constant_schedule(0.1))
    grads = jax.tree.map(jnp.ones_like, params)
    new = jax.jit(lambda p: optax.apply_updates(p, tx.update(grads, tx.init(p), p)[0]))(params)
    for a, b in zip(jax.tree.leaves(params["encoder"]), jax.tree.leaves(new["encoder"])):
        np.testing.assert_array_equal(a, b)
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params["head"]), jax.tree.leaves(new["head"])))


def test_sgd_is_pytorch_sgd_per_group(params):
    """torch.optim.SGD: g' = g + wd * p (+ l1 * sign(p) here), buf = momentum * buf + g',
    p -= group_lr * buf, with group_lr = multiplier * schedule(step)."""
    lr, wd, l1, mu, multipliers = 0.1, 1e-2, 1e-3, 0.9, (0.25, 0.5, 1.0)
    config = optim_config(name="sgd", lr=lr, weight_decay=wd, l1=l1, momentum=mu, group_lr_multipliers=multipliers)
    schedule = optax.linear_schedule(lr, lr / 2, 2)
    tx = optim.make_optimizer(config, schedule)
    groups = optim.param_groups(params, 3)
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params) for _ in range(2)]

    @jax.jit
    def two_steps(current):
        state = tx.init(current)
        for g in grads:
            updates, state = tx.update(g, state, current)
            current = optax.apply_updates(current, updates)
        return current

    current = two_steps(params)

    def expected(p, g0, g1, group):
        p, g0, g1 = (np.asarray(a, np.float64) for a in (p, g0, g1))
        group_lr = [multipliers[group] * float(schedule(s)) for s in (0, 1)]
        buf = g0 + wd * p + l1 * np.sign(p)
        p1 = p - group_lr[0] * buf
        buf = mu * buf + g1 + wd * p1 + l1 * np.sign(p1)
        return p1 - group_lr[1] * buf

    want = jax.tree.map(expected, params, grads[0], grads[1], groups)
    for a, b in zip(jax.tree.leaves(current), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
