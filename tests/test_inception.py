"""InceptionV4: size and shapes of the full network without running it, and the smallest input
it takes (tests/test_zoo.py trains it under the sharded step; tests/interop checks it against timm)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model, inception


def param_count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_inception_v4_parameter_count_matches_the_published_one():
    """Reference: 42,679,816 parameters at 3 channels / 1000 classes, the count published for
    Cadene's pretrainedmodels InceptionV4 (the implementation timm's derives from) in
    osmr/imgclsmob's pytorch/README.md model table, and for keras-hub's `inception_v4_imagenet`
    preset; timm's model card rounds it to 42.68M. One more input channel adds 3*3*32 stem
    weights and 28 instead of 1000 classes removes 972 * (1536 + 1) classifier parameters."""
    expected = 42_679_816 + 3 * 3 * 32 - 972 * (1536 + 1)
    model = create_model("inception_v4", 28, head="gap")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 4)), train=False))
    assert param_count(shapes["params"]) == expected == 41_186_140
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_inception_v4_feature_map_at_299px(dtype):
    """8 x 8 x 1536 at 299 px as in the paper; a bfloat16 network still keeps float32 variables."""
    encoder = inception.build_encoder("inception_v4", dtype=dtype)
    x = jax.ShapeDtypeStruct((2, 299, 299, 4), jnp.float32)
    variables = jax.eval_shape(lambda: encoder.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
    features = jax.eval_shape(lambda v, x: encoder.apply(v, x, train=False), variables, x)
    assert encoder.num_features == 1536
    assert features.shape == (2, 8, 8, 1536) and features.dtype == dtype
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_smallest_input_is_75px_and_smaller_is_refused():
    """The unpadded stem and reductions take 75 px to a 1 x 1 map; at 74 px PyTorch refuses a
    kernel larger than its input, and Flax is stopped before it returns an empty map."""
    encoder = inception.build_encoder("inception_v4", width=4)
    init = lambda size: encoder.init(jax.random.key(0), jnp.zeros((1, size, size, 4)), train=False)  # noqa: E731
    size = inception.MIN_INPUT_SIZE
    assert size == 75
    features = jax.eval_shape(lambda: encoder.apply(init(size), jnp.zeros((1, size, size, 4)), train=False))
    assert features.shape == (1, 1, 1, encoder.num_features)
    with pytest.raises(ConfigError, match="at least 75"):
        jax.eval_shape(lambda: init(size - 1))


def test_flax_module_path_joins_sequential_indices_to_their_name():
    assert inception.flax_module_path("features.0.conv") == ("features_0", "conv")
    assert inception.flax_module_path("features.3.conv.bn") == ("features_3", "conv", "bn")
    assert inception.flax_module_path("features.4.branch1.2.conv") == ("features_4", "branch1_2", "conv")
    assert inception.flax_module_path("features.21.branch2_3a.bn") == ("features_21", "branch2_3a", "bn")


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 1, 1, 2), (1, 2, 5, 1), (2, 8, 8, 4)])
def test_average_pool_excludes_the_padding_as_flax_does(shape):
    """The exporters' form of timm's `AvgPool2d(3, 1, 1, count_include_pad=False)` (a VALID pool of
    the zero-padded map rescaled by each pixel's count) equals flax's `count_include_pad=False`
    to float32 rounding, at the borders of 1- and 2-pixel sides too."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    want = nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)
    np.testing.assert_allclose(inception.avg_pool(x), want, rtol=1e-6, atol=1e-6)
