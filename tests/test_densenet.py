"""DenseNet121: size and shapes of the full network without running it (tracing only), the
smallest input, and rematerialisation (tests/test_zoo.py trains it under the sharded step;
tests/interop checks it against timm)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model, densenet


def param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def random_variables(module, x, seed: int = 0) -> dict:
    """Variables of the right shapes filled on the host: XLA's CPU compile of Flax's own init
    (a random generator per tensor) costs more than the forward passes under test. BatchNorm
    values are non-trivial so that train and eval mode differ."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
        low, high = {"scale": (0.5, 1.5), "var": (0.5, 1.5)}.get(name, (-0.5, 0.5))
        return rng.uniform(low, high, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def paper_param_count(in_channels: int, num_classes: int, block_config=(6, 12, 24, 16),
                      growth: int = 32, stem: int = 64, bn_size: int = 4) -> int:
    """DenseNet-BC by hand from Huang et al. (2017), Table 1: 7x7 stem conv + BN; per dense
    layer BN, 1x1 conv to bn_size*k, BN, 3x3 conv to k (no conv biases); per transition BN and
    a 1x1 conv halving the channels; a final BN; a linear classifier with bias. A BatchNorm
    has 2 parameters per channel (its running statistics are not parameters)."""
    count = 7 * 7 * in_channels * stem + 2 * stem
    channels = stem
    for i, num_layers in enumerate(block_config):
        for _ in range(num_layers):
            count += 2 * channels + channels * bn_size * growth
            count += 2 * bn_size * growth + 3 * 3 * bn_size * growth * growth
            channels += growth
        if i < len(block_config) - 1:
            count += 2 * channels + channels * (channels // 2)
            channels //= 2
    return count + 2 * channels + channels * num_classes + num_classes


def test_densenet121_parameter_count_matches_the_paper_and_torchvision():
    """Reference: the hand count above, which itself must give torchvision's published
    densenet121 size (7,978,856 parameters at 3 channels / 1000 classes, its weights'
    `num_params`); one more input channel adds 7*7*64 stem weights and 28 instead of 1000
    classes removes 972 * (1024 + 1) classifier parameters."""
    assert paper_param_count(3, 1000) == 7_978_856
    expected = 7_978_856 + 7 * 7 * 64 - 972 * (1024 + 1)
    assert paper_param_count(4, 28) == expected == 6_985_692

    model = create_model("densenet121", 28, head="gap")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 4)), train=False))
    assert param_count(shapes["params"]) == expected
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("width,dtype", [(64, jnp.float32), (7, jnp.bfloat16)])
def test_densenet121_feature_map_at_224px(width, dtype):
    """Full size, and width 7 (growth 3) in bfloat16, whose first transition halves 7 + 6 * 3 = 25
    channels to 12 as PyTorch's `//` does; parameters stay float32."""
    encoder = densenet.build_encoder("densenet121", width=width, dtype=dtype)
    x = jax.ShapeDtypeStruct((2, 224, 224, 4), jnp.float32)
    variables = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    features = jax.eval_shape(lambda v, x: encoder.apply(v, x, train=False), variables, x)
    assert encoder.num_features == {64: 1024, 7: 96}[width]   # 25 -> 12, +36 -> 24, +72 -> 48, +48
    assert features.shape == (2, 7, 7, encoder.num_features) and features.dtype == dtype
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_smallest_input_is_29px_and_smaller_is_refused():
    """PyTorch refuses a 1x1 map before a 2x2 average pool; Flax would pool it to nothing."""
    encoder = densenet.build_encoder("densenet121", width=4)
    init = lambda size: encoder.init(jax.random.key(0), jnp.zeros((1, size, size, 4)), train=False)  # noqa: E731
    assert jax.eval_shape(lambda: encoder.apply(init(29), jnp.zeros((1, 29, 29, 4)), train=False)).shape[1:3] == (1, 1)
    with pytest.raises(ConfigError, match="too small"):
        jax.eval_shape(lambda: init(28))


def test_flax_module_path_drops_timm_features_prefix():
    path = densenet.flax_module_path("features.denseblock1.denselayer1.norm1")
    assert path == ("denseblock1", "denselayer1", "norm1")
    assert densenet.flax_module_path("features.transition3.conv") == ("transition3", "conv")
    assert densenet.flax_module_path("features.norm5") == ("norm5",)
    with pytest.raises(KeyError):
        densenet.flax_module_path("classifier")


def test_remat_changes_memory_not_results():
    """Gradients with per-layer rematerialisation equal the plain ones (one small block: the
    layers are the same code at every depth)."""
    x = np.random.default_rng(1).standard_normal((2, 16, 16, 4)).astype(np.float32)
    plain = densenet.DenseNetEncoder(block_config=(3,), width=4, axis_name=None)
    remat = plain.clone(remat=True)
    variables = random_variables(plain, x)
    assert jax.tree.structure(random_variables(remat, x)) == jax.tree.structure(variables)

    def loss(encoder, params):
        features, _ = encoder.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return (features ** 2).mean()

    both = jax.jit(lambda p: (jax.grad(partial(loss, plain))(p), jax.grad(partial(loss, remat))(p)))
    expected, actual = both(variables["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), expected, actual)
