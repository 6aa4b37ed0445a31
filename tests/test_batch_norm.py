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
