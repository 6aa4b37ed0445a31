"""Gradient accumulation (train.accumulation_steps = A): A sequential micro-batches give one
update equal to the large-batch objective's, on one device or eight, with the hard sampler
ranking the whole accumulated batch.

Micro-batch j is the global samples j, j+A, j+2A, ... and each is normalised by BatchNorm with
its own moments, so the reference below is assembled by hand from per-micro-batch forwards;
where micro-batch moments equal the batch's (a batch of A copies) the accumulated step is
compared with the plain large-batch step itself.
"""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from hpa_jax.runtime import sharding
from hpa_jax.training import losses
from hpa_jax.data.pipeline import normalize
from hpa_jax.config.validate import validate
from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model_from_config
from hpa_jax.runtime.sharding import MESH_AXIS
from hpa_jax.training.loop import make_train_step
from test_train_step import initial_state, random_batches, tiny_config

A = 2
BATCH = 16
# Fixed E-loss weights: the copies test then compiles the same 8-device accumulated program as
# the fixture, which the persistent compilation cache (tests/conftest.py) serves.
CLASS_WEIGHTS = losses.effective_number_weights(np.arange(1, 29) * 37 % 101 + 1, 0.99)


def hard_config(accumulation_steps):
    config = tiny_config()
    config.loss.name = "bce+focal"
    config.loss.e_alpha = 0.99
    config.loss.hard_sample_ratio = 0.5
    config.train.batch_size = BATCH
    config.train.accumulation_steps = accumulation_steps
    return config


@functools.cache
def host_initial_state():
    """Built (and compiled) once: the params do not depend on the loss or accumulation settings."""
    return jax.device_get(initial_state(hard_config(1), sharding.make_mesh(jax.devices()[:1])))


def fresh_state(mesh):
    """A device copy of the initial state for a step to donate (copied first so that no device
    buffer can alias the cached host arrays)."""
    return jax.device_put(jax.tree.map(np.array, host_initial_state()), sharding.replicated(mesh))


def one_step(config, devices, images, labels, class_weights):
    mesh = sharding.make_mesh(devices)
    step = make_train_step(config, mesh, class_weights)
    state, metrics = step(fresh_state(mesh), *sharding.put_batch(mesh, (images, labels)), jax.random.key(0))
    return jax.device_get(state), jax.device_get(metrics)


def reference_step(config, class_weights, images, labels):
    """By hand on one device: per-sample losses of each micro-batch (global samples j, j+A, ...)
    with its own BatchNorm moments, the top K of all B by a host-side stable sort, the gradient
    as the sum over micro-batches of jax.grad of sum(selected losses in it)/K, and the mean of
    the A running-statistics updates."""
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = host_initial_state()
    model = create_model_from_config(config)
    groups = [np.arange(j, len(images), A) for j in range(A)]
    k = losses.num_hard_samples(len(images), config.loss.hard_sample_ratio)

    def forward(params, x):
        logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                      mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return logits, updates["batch_stats"]

    forward = jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)), out_specs=(P(MESH_AXIS), P()),
                            check_vma=False)   # the BatchNorm moments are replicated, which vma cannot infer

    @jax.jit
    @functools.partial(jax.value_and_grad, has_aux=True)
    def micro_objective(params, x, y, selected):   # one micro-batch's share of sum(selected losses)/K
        logits, stats = forward(params, normalize(x, config.data.mean, config.data.std))
        per_sample = losses.per_sample_loss(config.loss, logits, y, class_weights)
        return (per_sample * selected).sum() / k, (per_sample, stats)

    per_sample = np.zeros(len(images))
    for g in groups:
        (_, (l, _)), _ = micro_objective(state.params, images[g], labels[g], np.zeros(len(g), np.float32))
        per_sample[g] = np.asarray(l, np.float64)
    mask = np.zeros(len(images), np.float32)
    mask[np.argsort(-per_sample, kind="stable")[:k]] = 1

    loss, grads, stats = 0.0, None, []
    for g in groups:
        (loss_g, (_, stats_g)), grads_g = micro_objective(state.params, images[g], labels[g], mask[g])
        loss += float(loss_g)
        grads = grads_g if grads is None else jax.tree.map(np.add, grads, grads_g)
        stats.append(stats_g)
    batch_stats = jax.tree.map(lambda *s: sum(s) / A, *stats)
    return jax.device_get(state.apply_gradients(grads=grads, batch_stats=batch_stats)), loss, mask, per_sample, k


@pytest.fixture(scope="module")
def runs():
    images, labels = random_batches(1, batch=BATCH, seed=1)   # its top 8: 3 of micro-batch 0, 5 of 1
    images, labels = images[0], labels[0]
    config = hard_config(A)
    return {"reference": reference_step(config, CLASS_WEIGHTS, images, labels),
            1: one_step(config, jax.devices()[:1], images, labels, CLASS_WEIGHTS),
            8: one_step(config, jax.devices(), images, labels, CLASS_WEIGHTS)}


def assert_states_close(actual, expected, rtol=2e-4, atol=2e-6):
    for name in ("params", "batch_stats"):
        flat_expected = jax.tree_util.tree_leaves_with_path(getattr(expected, name))
        flat_actual = jax.tree.leaves(getattr(actual, name))
        assert len(flat_actual) == len(flat_expected)
        for (path, e), a in zip(flat_expected, flat_actual):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{name}{jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("devices", [1, 8])
def test_accumulated_step_equals_the_hand_assembled_reference(runs, devices):
    expected, loss, _, _, _ = runs["reference"]
    state, metrics = runs[devices]
    assert bool(metrics["finite"])
    assert int(state.step) == 1
    assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-5)
    assert_states_close(state, expected)
    # Not vacuous: the step moved the params and the running statistics.
    init = host_initial_state()
    assert not np.allclose(init.params["head"]["fc"]["kernel"], state.params["head"]["fc"]["kernel"])
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.batch_stats), jax.tree.leaves(state.batch_stats)))


def test_hard_selection_ranks_the_whole_accumulated_batch(runs):
    _, _, expected, per_sample, k = runs["reference"]
    assert k == 8 and expected.sum() == 8
    for devices in (1, 8):
        selected = runs[devices][1]["hard_selected"]
        assert selected.shape == (BATCH,)
        np.testing.assert_array_equal(selected, expected, err_msg=f"{devices} device(s)")
    assert runs[1][1]["loss"] == pytest.approx(np.sort(per_sample)[-k:].mean(), rel=1e-5)
    # A top K/A within each micro-batch would pick a different set here: the ranking is global.
    per_micro = np.zeros(BATCH)
    for j in range(A):
        group = np.arange(j, BATCH, A)
        per_micro[group[np.argsort(-per_sample[group], kind="stable")[:k // A]]] = 1
    assert not np.array_equal(per_micro, expected)


def test_batch_of_copies_equals_the_large_batch_step():
    """A batch made of A copies of one micro-batch (np.repeat puts the copies of sample i at
    i*A, ..., so micro-batch j is the whole original set): every micro-batch then has the batch's
    BatchNorm moments, and the accumulated step must equal the plain large-batch step, running
    statistics included (A sequential PyTorch-style updates of them would not)."""
    images, labels = random_batches(1, batch=BATCH // A, seed=4)
    images, labels = np.repeat(images[0], A, axis=0), np.repeat(labels[0], A, axis=0)
    large, large_metrics = one_step(hard_config(1), jax.devices(), images, labels, CLASS_WEIGHTS)
    accumulated, metrics = one_step(hard_config(A), jax.devices(), images, labels, CLASS_WEIGHTS)
    np.testing.assert_array_equal(metrics["hard_selected"], large_metrics["hard_selected"])
    assert float(metrics["loss"]) == pytest.approx(float(large_metrics["loss"]), rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(float(large_metrics["grad_norm"]), rel=1e-4)
    assert_states_close(accumulated, large)


def test_per_device_batch_not_divisible_by_accumulation_steps_is_a_config_error():
    config = hard_config(3)
    mesh = sharding.make_mesh()
    with pytest.raises(ConfigError, match="per-device batch of 2 images .* by train.accumulation_steps=3"):
        validate(config, num_devices=mesh.size)           # 16 / 8 devices = 2 per device
    config.train.batch_size = 48                         # the config passes, the batch given does not
    validate(config, num_devices=mesh.size)
    step = make_train_step(config, mesh)
    images, labels = random_batches(1, batch=BATCH)
    with pytest.raises(ConfigError, match="per-device batch of 2 images is not divisible"):
        step(fresh_state(mesh), *sharding.put_batch(mesh, (images[0], labels[0])), jax.random.key(0))
