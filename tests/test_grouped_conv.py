"""Every grouped-convolution implementation computes XLA's `feature_group_count` convolution:
the same outputs and the same gradients of input and kernel, with timm's kernel shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model
from hpa_jax.models.layers import (GROUPED_CONV_IMPLEMENTATIONS, grouped_conv_general_dilated, groups_per_split,
                                   resolve_grouped_conv, torch_padding)

DENSE = [i for i in GROUPED_CONV_IMPLEMENTATIONS if i not in ("auto", "xla")]
DN = ("NHWC", "HWIO", "NHWC")


def reference(x, k, stride, groups):
    """XLA's own grouped convolution in float64-free highest precision."""
    return lax.conv_general_dilated(x, k, (stride, stride), torch_padding(k.shape[:2]), dimension_numbers=DN,
                                    feature_group_count=groups, precision=lax.Precision.HIGHEST)


def ours(implementation):
    conv = grouped_conv_general_dilated(implementation)

    def f(x, k, stride, groups):
        return conv(x, k, (stride, stride), torch_padding(k.shape[:2]), dimension_numbers=DN,
                    feature_group_count=groups, precision=lax.Precision.HIGHEST)
    return f


@pytest.mark.parametrize("implementation", DENSE)
@pytest.mark.parametrize("size,stride,groups,group_width,out_per_group", [
    (9, 1, 8, 1, 1),     # depthwise, odd size
    (10, 2, 8, 2, 2),    # even size, strided
    (7, 2, 6, 4, 4),     # odd size, strided, a group count with divisor 3
    (8, 1, 4, 8, 4),     # fewer outputs than inputs per group
    (6, 2, 2, 32, 32),   # wide groups (SE-ResNeXt's last stage)
])
def test_implementation_equals_xla(implementation, size, stride, groups, group_width, out_per_group):
    rng = np.random.default_rng(size * 100 + groups)
    x = jnp.asarray(rng.standard_normal((2, size, size, groups * group_width), dtype=np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, group_width, groups * out_per_group), dtype=np.float32))
    cotangent = jnp.asarray(rng.standard_normal(reference(x, k, stride, groups).shape, dtype=np.float32))

    def loss(f):
        return lambda x, k: (f(x, k, stride, groups) * cotangent).sum()

    want, want_grads = reference(x, k, stride, groups), jax.grad(loss(reference), argnums=(0, 1))(x, k)
    got, got_grads = ours(implementation)(x, k, stride, groups), jax.grad(loss(ours(implementation)),
                                                                        argnums=(0, 1))(x, k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    for g, w in zip(got_grads, want_grads):  # d/dx, d/dkernel
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_seresnext_is_the_same_model_under_every_implementation():
    """A tiny SE-ResNeXt (group widths 1 to 8): identical parameter tree, and the same logits and
    gradients with every implementation from the same parameters."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 33, 33, 4), dtype=np.float32))
    models = {i: create_model("seresnext50_32x4d", 28, head="gap", width=8, grouped_conv=i)
              for i in GROUPED_CONV_IMPLEMENTATIONS}
    variables = models["xla"].init(jax.random.key(0), x, train=False)

    def loss(model):
        def f(params):
            return model.apply({**variables, "params": params}, x, train=False).sum()
        return f

    want, want_grads = jax.value_and_grad(loss(models["xla"]))(variables["params"])
    for implementation, model in models.items():
        shapes = jax.tree.map(jnp.shape, model.init(jax.random.key(0), x, train=False))
        assert shapes == jax.tree.map(jnp.shape, variables), implementation
        got, got_grads = jax.value_and_grad(loss(model))(variables["params"])
        np.testing.assert_allclose(got, want, rtol=1e-4)
        for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * float(jnp.abs(w).max()) + 1e-7)


def test_auto_is_xla_except_on_cpu():
    assert resolve_grouped_conv("auto", "cpu") == "split"
    assert resolve_grouped_conv("auto", "gpu") == "xla"
    assert resolve_grouped_conv("auto", "tpu") == "xla"
    assert resolve_grouped_conv("block_diagonal", "gpu") == "block_diagonal"
    with pytest.raises(ConfigError, match="grouped_conv 'fast'"):
        create_model("resnet18", grouped_conv="fast")


@pytest.mark.parametrize("groups,width,expected", [(32, 1, 16), (32, 4, 4), (32, 8, 2), (32, 32, 1), (6, 4, 3),
                                                    (7, 2, 7), (5, 1, 5)])
def test_groups_per_split_divides_and_spans_at_most_16_channels(groups, width, expected):
    per_split = groups_per_split(groups, width)
    assert per_split == expected
    assert groups % per_split == 0 and (per_split * width <= 16 or per_split == 1)
