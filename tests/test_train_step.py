"""The sharded train step is the single-device step on the same global batch."""

import jax
import numpy as np
import pytest

from configs import quickstart
from hpa_jax import optim, sharding
from hpa_jax.models import create_model_from_config
from hpa_jax.train import create_train_state, make_train_step


def tiny_config():
    config = quickstart.get_config()
    config.model.width = 8
    config.model.head.layers = ((32, 0.0),)   # dropout masks differ per device by design
    config.data.crop_size = 32
    # SGD: Adam divides by the root of tiny second moments, which magnifies float32 summation-order
    # differences between 1 and 8 devices into visible parameter differences.
    config.optim.name = "sgd"
    config.optim.lr = 0.1
    return config


def run_steps(config, devices, images, labels, num_steps=2):
    mesh = sharding.make_mesh(devices)
    model = create_model_from_config(config)
    tx = optim.make_optimizer(config.optim, total_steps=10)
    state = create_train_state(model, tx, jax.random.key(0), image_size=32, in_channels=4)
    state = jax.device_put(state, sharding.replicated(mesh))
    step = make_train_step(config, mesh)
    losses = []
    for i in range(num_steps):
        batch = sharding.put_batch(mesh, (images[i], labels[i]))
        state, metrics = step(state, *batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


def test_eight_devices_equal_one_device():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
    config = tiny_config()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 32, 32, 4), dtype=np.uint8)
    labels = (rng.random((2, 16, 28)) < 0.2).astype(np.uint8)
    one, one_losses = run_steps(config, jax.devices()[:1], images, labels)
    eight, eight_losses = run_steps(config, jax.devices(), images, labels)
    np.testing.assert_allclose(eight_losses, one_losses, rtol=1e-5)
    for name in ("params", "batch_stats"):
        flat_one = jax.tree_util.tree_leaves_with_path(getattr(one, name))
        flat_eight = jax.tree.leaves(getattr(eight, name))
        for (path, a), b in zip(flat_one, flat_eight):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6, err_msg=f"{name}{jax.tree_util.keystr(path)}")
    # The step did change the params and the running statistics (the comparison is not vacuous).
    init = create_train_state(create_model_from_config(config), optim.make_optimizer(config.optim, 10),
                              jax.random.key(0), image_size=32, in_channels=4)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.batch_stats), jax.tree.leaves(one.batch_stats))]
    assert all(moved)
    assert not np.allclose(init.params["head"]["fc"]["kernel"], one.params["head"]["fc"]["kernel"])


def test_batch_not_divisible_by_devices_is_a_clear_error():
    mesh = sharding.make_mesh()
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        sharding.check_divisible(12, mesh, "train.batch_size")
