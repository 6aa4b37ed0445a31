"""The sharded train step is the single-device step on the same global batch, with E-loss,
focal loss, two layer groups and the hard sampler ranking the whole global batch."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from configs import quickstart
from hpa_jax.config.validate import validate
from hpa_jax.runtime import sharding
from hpa_jax.training import losses, optim
from hpa_jax.data.pipeline import normalize
from hpa_jax.errors import TrainingDiverged
from hpa_jax.models import create_model_from_config
from hpa_jax.runtime.sharding import MESH_AXIS
from hpa_jax.training.state import create_train_state
from hpa_jax.training.loop import make_train_step, run_epoch


def tiny_config():
    config = quickstart.get_config()
    config.model.width = 8
    config.model.head.layers = ((32, 0.0),)   # dropout masks differ per device by design
    config.data.crop_size = 32
    # SGD: Adam divides by the root of tiny second moments, which magnifies float32 summation-order
    # differences between 1 and 8 devices into visible parameter differences.
    config.optim.name = "sgd"
    config.optim.lr = 0.1
    config.optim.group_lr_multipliers = (1.0,)
    config.optim.schedule = "cosine"
    config.loss.e_alpha = 0.0                 # plain BCE over the whole batch unless a test asks for more
    config.loss.hard_sample_ratio = 1.0
    return config


def initial_state(config, mesh):
    tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr)
    state = create_train_state(create_model_from_config(config), tx, jax.random.key(0), image_size=32, in_channels=4)
    return jax.device_put(state, sharding.replicated(mesh))


def random_batches(num, batch=16, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num, batch, 32, 32, 4), dtype=np.uint8)
    labels = (rng.random((num, batch, 28)) < 0.2).astype(dtype)
    return images, labels


def run_steps(config, devices, images, labels, class_weights):
    mesh = sharding.make_mesh(devices)
    state = initial_state(config, mesh)
    step = make_train_step(config, mesh, class_weights)
    history = []
    for i in range(len(images)):
        state, metrics = step(state, *sharding.put_batch(mesh, (images[i], labels[i])), jax.random.key(i))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


def brute_force_selection(config, class_weights, images, labels, k):
    """Top-K of the global batch's per-sample losses, recomputed on the host with a stable sort."""
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = initial_state(config, mesh)
    model = create_model_from_config(config)

    def forward(variables, x):  # train mode: BatchNorm uses the batch's statistics, as in the step
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[0]

    forward = jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)), out_specs=P(MESH_AXIS))
    logits = forward({"params": state.params, "batch_stats": state.batch_stats},
                     normalize(sharding.put_batch(mesh, images), config.data.mean, config.data.std))
    per_sample = np.asarray(losses.per_sample_loss(config.loss, logits, labels, class_weights), np.float64)
    chosen = np.argsort(-per_sample, kind="stable")[:k]
    mask = np.zeros(len(per_sample))
    mask[chosen] = 1
    return mask, per_sample


def test_eight_devices_equal_one_device_with_e_loss_and_hard_sampler():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 simulated CPU devices"
    config = tiny_config()
    config.loss.name = "bce+focal"
    config.loss.e_alpha = 0.99
    config.loss.hard_sample_ratio = 0.5
    config.optim.group_lr_multipliers = (0.5, 1.0)
    images, labels = random_batches(2)
    class_weights = losses.effective_number_weights(labels.reshape(-1, 28).sum(0) * 100, 0.99)
    one, one_history = run_steps(config, jax.devices()[:1], images, labels, class_weights)
    eight, eight_history = run_steps(config, jax.devices(), images, labels, class_weights)

    np.testing.assert_allclose([m["loss"] for m in eight_history], [m["loss"] for m in one_history], rtol=1e-5)
    for name in ("params", "batch_stats"):
        flat_one = jax.tree_util.tree_leaves_with_path(getattr(one, name))
        flat_eight = jax.tree.leaves(getattr(eight, name))
        for (path, a), b in zip(flat_one, flat_eight):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6, err_msg=f"{name}{jax.tree_util.keystr(path)}")

    # The first step's selection is the top 8 of 16 of the whole batch, as a host-side sort finds it.
    expected, per_sample = brute_force_selection(config, class_weights, images[0], labels[0], k=8)
    np.testing.assert_array_equal(one_history[0]["hard_selected"], expected)
    np.testing.assert_array_equal(eight_history[0]["hard_selected"], expected)
    assert one_history[0]["loss"] == pytest.approx(np.sort(per_sample)[-8:].mean(), rel=1e-5)
    # Split over 8 devices (2 samples each), a per-device top-1 would differ from the global top 8.
    per_device = np.zeros(16)
    per_device[np.arange(8) * 2 + per_sample.reshape(8, 2).argmax(1)] = 1
    assert not np.array_equal(per_device, expected)

    # The step did change the params and the running statistics (the comparison is not vacuous).
    init = jax.device_get(initial_state(config, sharding.make_mesh(jax.devices()[:1])))
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.batch_stats), jax.tree.leaves(one.batch_stats)))
    assert not np.allclose(init.params["head"]["fc"]["kernel"], one.params["head"]["fc"]["kernel"])


def test_batch_not_divisible_by_devices_is_a_clear_error():
    config = tiny_config()
    config.train.batch_size = 12
    with pytest.raises(ValueError, match="train.batch_size=12 is not divisible by the 8 devices"):
        validate(config, num_devices=sharding.make_mesh().size)


def test_non_finite_step_keeps_the_state_and_stops_naming_the_step():
    config = tiny_config()
    mesh = sharding.make_mesh()
    state = initial_state(config, mesh)
    before = jax.device_get(state)
    images, labels = random_batches(4, dtype=np.float32)
    labels[2, 5, 3] = np.nan                           # poisons the third step's loss
    batches = [{"image": images[i], "labels": labels[i]} for i in range(4)]
    step = make_train_step(config, mesh)

    bad_state, metrics = step(state, *sharding.put_batch(mesh, (images[2], labels[2])), jax.random.key(0))
    assert not bool(metrics["finite"])
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(bad_state))):
        np.testing.assert_array_equal(a, b)

    state = jax.device_put(before, sharding.replicated(mesh))
    with pytest.raises(TrainingDiverged, match="non-finite loss or gradient at step 3"):
        run_epoch(step, state, tqdm(batches, disable=True), mesh, jax.random.key(1), lambda s: 0.1, check_every=2)


def test_device_batch_norm_is_each_shard_on_its_own_with_running_statistics_averaged():
    """`model.batch_norm_sync="device"` on 8 devices against a brute-force reference on one: the
    loss is the sum over the 8 shards of each shard's BCE with its own BatchNorm moments (over the
    global batch), the update the optimizer's step on that gradient, the running statistics the
    mean of the shards' (as DistributedDataParallel without SyncBatchNorm, its buffers averaged),
    which are not the whole batch's."""
    config = tiny_config()
    config.model.batch_norm_sync = "device"
    images, labels = random_batches(1)
    eight, history = run_steps(config, jax.devices(), images, labels, None)

    mesh = sharding.make_mesh(jax.devices()[:1])
    state = initial_state(config, mesh)
    model = create_model_from_config(config)
    x = normalize(images[0], config.data.mean, config.data.std).reshape(8, 2, 32, 32, 4)
    y = labels[0].reshape(8, 2, 28).astype(np.float32)

    def loss_fn(params):
        total, stats = 0.0, []
        for d in range(8):
            logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x[d], train=True,
                                          mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            total = total + losses.per_sample_loss(config.loss, logits, y[d], None).sum() / 16
            stats.append(updates["batch_stats"])
        return total, jax.tree.map(lambda *s: sum(s) / 8, *stats)

    def reference(params):   # and the whole batch's statistics, to show the shards' differ from them
        whole = model.apply({"params": params, "batch_stats": state.batch_stats}, x.reshape(16, 32, 32, 4),
                            train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})[1]
        return jax.value_and_grad(loss_fn, has_aux=True)(params), whole["batch_stats"]

    ((loss, stats), grads), whole = jax.jit(reference)(state.params)
    expected = jax.device_get(state.apply_gradients(grads=grads, batch_stats=stats))
    assert history[0]["loss"] == pytest.approx(float(loss), rel=1e-5)
    for name in ("params", "batch_stats"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(getattr(expected, name)),
                                jax.tree.leaves(getattr(eight, name)), strict=True):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6, err_msg=f"{name}{jax.tree_util.keystr(path)}")
    assert not np.allclose(whole["encoder"]["bn1"]["var"], stats["encoder"]["bn1"]["var"], rtol=1e-4, atol=0)


def test_batches_go_to_the_devices_two_ahead_of_the_step():
    """`sharding.prefetch_to_devices`: every batch, in order, as the global arrays `put_batch` makes,
    with the host iterator read two batches ahead of the one handed to the step."""
    mesh = sharding.make_mesh()
    pulled = []

    def host():
        for i in range(5):
            pulled.append(i)
            yield {"image": np.full((8, 2), i, np.uint8), "skip": i}

    seen = []
    for arrays in sharding.prefetch_to_devices(host(), mesh, 2, keys=("image",)):
        i = int(arrays["image"][0, 0])
        seen.append(i)
        assert set(arrays) == {"image"} and arrays["image"].sharding == sharding.batch_sharding(mesh)
        assert pulled[-1] == min(i + 2, 4)
    assert seen == list(range(5))
