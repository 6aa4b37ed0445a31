"""`layers.BatchNorm` (moments averaged over the mesh in a fixed order) computes what Flax's own
BatchNorm computes with `lax.pmean`: outputs, running statistics and gradients, on 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from hpa_jax.runtime import sharding
from hpa_jax.models.layers import BATCH_NORM_DEFAULTS, BatchNorm
from hpa_jax.runtime.sharding import MESH_AXIS


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ordered_batch_norm_equals_flax_batch_norm_with_pmean(dtype):
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(3.0, 0.5, (16, 5, 5, 6)).astype(np.float32))
    modules = {name: cls(dtype=dtype, axis_name=MESH_AXIS, **BATCH_NORM_DEFAULTS)
               for name, cls in (("ours", BatchNorm), ("flax", nn.BatchNorm))}
    variables = modules["flax"].init(jax.random.key(0), x[:2], use_running_average=False)
    variables = {"params": {"scale": jnp.linspace(0.5, 1.5, 6), "bias": jnp.linspace(-1, 1, 6)},
                 "batch_stats": variables["batch_stats"]}

    def run(module):
        def loss(params, x):
            y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                      use_running_average=False, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(y.astype(jnp.float32))), (y, updates["batch_stats"])

        def step(params, x):
            (_, (y, stats)), (grad_params, grad_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
            return y, stats, jax.lax.psum(grad_params, MESH_AXIS), grad_x

        sharded = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(MESH_AXIS)),
                                out_specs=(P(MESH_AXIS), P(), P(), P(MESH_AXIS)), check_vma=False)
        return jax.device_get(jax.jit(sharded)(variables["params"], x))

    ours, flax_ = run(modules["ours"]), run(modules["flax"])
    tolerance = dict(rtol=2e-2, atol=2e-2) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    assert ours[0].dtype == flax_[0].dtype == dtype
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(flax_), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), **tolerance)
    eval_ours = modules["ours"].apply(variables, x, use_running_average=True)
    eval_flax = modules["flax"].apply(variables, x, use_running_average=True)
    np.testing.assert_allclose(np.asarray(eval_ours, np.float32), np.asarray(eval_flax, np.float32), **tolerance)


def test_a_batch_norm_layer_takes_one_collective_each_way_and_none_with_device_statistics():
    """Read from the compiled program (`runtime.interconnect`): the layer's moments cross the mesh
    in one all-gather forward and one backward (where a mean, then a variance of the centred
    values, would be two each way); with `axis_name=None` (model.batch_norm_sync="device") none."""
    from hpa_jax.runtime import interconnect

    mesh = sharding.make_mesh()
    x = jnp.asarray(np.random.default_rng(0).normal(3.0, 0.5, (16, 5, 5, 6)).astype(np.float32))

    def kinds(axis_name):
        module = BatchNorm(axis_name=axis_name, **BATCH_NORM_DEFAULTS)
        variables = module.init(jax.random.key(0), x[:2], use_running_average=False)

        def step(params, x):   # gradients for the input too: the backward pass through the moments
            def loss(params, x):
                y, _ = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                    use_running_average=False, mutable=["batch_stats"])
                return jnp.sum(jnp.sin(y))
            return jax.grad(loss, argnums=(0, 1))(params, x)[1]

        sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(MESH_AXIS)), out_specs=P(MESH_AXIS),
                                        check_vma=False))
        text = sharded.lower(variables["params"], x).compile().as_text()
        return {c.kind for c in interconnect.collectives(text, 8)}, len(interconnect.collectives(text, 8))

    assert kinds(MESH_AXIS) == ({"all-gather"}, 2)
    assert kinds(None) == (set(), 0)


def test_moments_combined_over_devices_are_the_whole_batch_two_pass_moments():
    """`collectives.batch_moments` on 8 shards against numpy's float64 mean and variance of the
    whole batch, for values whose spread is small next to their mean (where E[x^2] - E[x]^2
    loses every digit in float32) and shards of different means."""
    from hpa_jax.collectives import batch_moments

    mesh = sharding.make_mesh()
    rng = np.random.default_rng(1)
    x = (1000.0 + rng.normal(0, 0.01, (8, 64, 3)) + np.arange(8)[:, None, None] * 0.003).astype(np.float32)

    def moments(shard):
        local = shard.reshape(-1, 3)
        mean = local.mean(0)
        return batch_moments(mean, jnp.square(local - mean).mean(0))

    mean, var = jax.jit(jax.shard_map(moments, mesh=mesh, in_specs=P(MESH_AXIS), out_specs=P(),
                                      check_vma=False))(jnp.asarray(x))
    whole = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, whole.mean(0), rtol=1e-7)
    np.testing.assert_allclose(var, whole.var(0), rtol=5e-3)   # the float32 mean of 1000s is off by ~1e-5
    fast = np.float32(np.square(x.reshape(-1, 3)).mean(0)) - np.float32(x.reshape(-1, 3).mean(0)) ** 2
    assert np.abs(fast - whole.var(0)).max() > 10 * np.abs(np.asarray(var) - whole.var(0)).max()
