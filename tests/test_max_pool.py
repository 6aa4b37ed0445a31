"""`layers.max_pool` is `nn.max_pool` with another way of computing the same gradient: both are
checked against Flax/XLA's own, ties included (ReLU outputs are full of equal zeros)."""

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from hpa_jax.models.layers import max_pool


@pytest.mark.parametrize("shape,window,strides,padding", [
    ((2, 16, 16, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),   # ResNet/DenseNet stem, even size
    ((2, 15, 15, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),   # odd size
    ((2, 17, 17, 2), (3, 3), (2, 2), "VALID"),            # InceptionV4's reductions
    ((2, 9, 9, 2), (2, 2), (2, 2), "SAME"),               # GapNet-PL (odd size: SAME pads the end)
    ((1, 8, 8, 1), (3, 3), (1, 1), ((1, 1), (1, 1))),     # overlapping windows, stride 1
])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_equals_flax_in_value_and_gradient(shape, window, strides, padding, dtype):
    rng = np.random.default_rng(0)
    x = jax.nn.relu(jnp.asarray(rng.standard_normal(shape), dtype))            # ties at zero
    x = x.at[0, :4, :4, 0].set(jnp.asarray(1.0, dtype))                          # ties at a maximum
    cotangent = jnp.asarray(rng.standard_normal(nn.max_pool(x, window, strides, padding).shape), dtype)

    def loss(pool):
        return lambda x: (pool(x).astype(jnp.float32) * cotangent.astype(jnp.float32)).sum()

    want = jax.grad(loss(lambda x: nn.max_pool(x, window, strides=strides, padding=padding)))(x)
    got = jax.grad(loss(lambda x: max_pool(x, window, strides, padding)))(x)
    np.testing.assert_array_equal(max_pool(x, window, strides, padding),
                                  nn.max_pool(x, window, strides=strides, padding=padding))
    assert got.dtype == want.dtype
    # Where windows overlap, an input's cotangents are summed in another order: rounding only. A
    # tie sent to the wrong input would be off by a whole cotangent (~1).
    tolerance = 1e-6 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tolerance, atol=tolerance)
