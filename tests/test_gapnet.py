"""GapNet-PL encoder: size against the published layer list, shapes, SELU init, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.errors import ConfigError
from hpa_jax.models import ENCODERS, Classifier, create_model, gapnet
from hpa_jax.models.heads import ClassifierHead

GAPNET_HEAD = {"pool": "gap", "layers": ((256, 0.3), (256, 0.3))}


def key(seed: int) -> jax.Array:
    """An "rbg" key: XLA:CPU compiles the partitionable threefry of jax's default keys about
    6x slower (~60 s for a tiny GapNet's init on a loaded machine); the draws' distribution,
    all these tests rely on, is the same."""
    return jax.random.key(seed, impl="rbg")


def init(model, x):
    return jax.jit(lambda k, x: model.init(k, x, train=False))(key(0), x)


def apply(model, variables, x, **kwargs):
    return jax.jit(lambda v, x: model.apply(v, x, train=False, **kwargs))(variables, x)


def conv3x3(c_in: int, c_out: int) -> int:
    return 3 * 3 * c_in * c_out + c_out


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def init_shapes(model, image_size: int, channels: int = 4):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, channels)),
                                             train=False))


def test_registered():
    assert "gapnet_pl" in ENCODERS
    with pytest.raises(ConfigError, match="no timm counterpart"):
        gapnet.flax_module_path("conv1")
    with pytest.raises(ConfigError, match="unknown GapNet"):
        gapnet.build_encoder("gapnet_xl")


def test_full_size_parameter_count_matches_the_layer_list():
    # REFERENCE.md / official TF code: block1 conv3x3/2 (32) + maxpool; block2 conv/2 (64) +
    # 3 conv (64) + maxpool; block3 3 conv (128); GAP of each block concatenated (32+64+128);
    # FC 256 -> FC 256 -> FC 28. Every layer has a bias; no normalisation layers.
    encoder = (conv3x3(4, 32)
               + conv3x3(32, 64) + 3 * conv3x3(64, 64)
               + conv3x3(64, 128) + 2 * conv3x3(128, 128))
    head = dense(32 + 64 + 128, 256) + dense(256, 256) + dense(256, 28)
    assert encoder == 499_488 and head == 130_588  # the arithmetic itself, spelled out once

    model = create_model("gapnet_pl", 28, 4, head=GAPNET_HEAD)
    variables = init_shapes(model, 768)
    assert set(variables) == {"params"}  # SELU net: no batch_stats collection
    assert count(variables["params"]["encoder"]) == encoder
    assert count(variables["params"]) == encoder + head == 630_076
    assert model.encoder.num_features == 224


def test_output_is_the_concatenated_block_pools_as_a_1x1_map():
    for size in (768, 65):  # 65: odd sizes go through the SAME max-pools
        out = jax.eval_shape(lambda: gapnet.build_encoder("gapnet_pl").init_with_output(
            jax.random.key(0), jnp.zeros((2, size, size, 4)), train=False)[0])
        assert out.shape == (2, 1, 1, 224)
    acp = gapnet.GapNetPLEncoder(pool="acp")
    assert acp.num_features == 448
    out = jax.eval_shape(lambda: acp.init_with_output(jax.random.key(0), jnp.zeros((2, 128, 128, 4)),
                                                      train=False)[0])
    assert out.shape == (2, 1, 1, 448)
    # Tiny widths keep at least one channel per block.
    assert gapnet.GapNetPLEncoder(width=8).num_features == 4 + 8 + 16
    assert gapnet.GapNetPLEncoder(width=1).num_features == 1 + 1 + 2
    with pytest.raises(ConfigError, match="pool"):
        init_shapes(gapnet.GapNetPLEncoder(pool="max"), 32)


@pytest.mark.parametrize("extra", [1, 3])
def test_extra_first_stage_convs_add_exactly_their_parameters(extra):
    base = init_shapes(gapnet.GapNetPLEncoder(), 768)["params"]
    more = init_shapes(gapnet.GapNetPLEncoder(extra_first_stage_convs=extra), 768)["params"]
    assert count(more) - count(base) == extra * conv3x3(32, 32) == extra * 9_248
    assert set(more) - set(base) == {f"block1_extra{i}" for i in range(extra)}
    assert all(more[f"block1_extra{i}"]["kernel"].shape == (3, 3, 32, 32) for i in range(extra))
    # Stride 1 before block1's max-pool: the feature count and the map sizes are unchanged.
    assert gapnet.GapNetPLEncoder(extra_first_stage_convs=extra).num_features == 224


def test_selu_self_normalises_a_deep_conv_stack_at_init():
    # LeCun-normal kernels + zero biases + SELU keep activations near mean 0 / variance 1
    # through a deep run of convolutions (block1's conv + 8 extra convs here). Measured away
    # from the zero-padded border, which a 9-layer stack reaches 9 pixels into. Observed
    # over seeds: |mean| < 0.015, |var - 1| < 0.04; tolerances 0.05 and 0.1. (A kaiming
    # init, variance 2/fan_in, would grow the variance by ~1.6x per layer.)
    depth = 8
    encoder = gapnet.GapNetPLEncoder(extra_first_stage_convs=depth)
    x = jax.random.normal(key(1), (4, 96, 96, 4))
    _, state = apply(encoder, init(encoder, x), x, mutable=["intermediates"],
                     capture_intermediates=lambda module, _: isinstance(module, nn.Conv))
    border = depth + 1
    for name in ["block1_conv0"] + [f"block1_extra{i}" for i in range(depth)]:
        pre_activation = state["intermediates"][name]["__call__"][0]
        a = np.asarray(nn.selu(pre_activation))[:, border:-border, border:-border]
        assert abs(a.mean()) < 0.05, (name, a.mean())
        assert abs(a.var() - 1) < 0.1, (name, a.var())


def test_tiny_forward_and_gradient():
    model = Classifier(encoder=gapnet.build_encoder("gapnet_pl", width=8, extra_first_stage_convs=1),
                       head=ClassifierHead(num_classes=28, pool="gap", layers=((16, 0.3), (16, 0.3))))
    x = jax.random.normal(key(2), (4, 64, 64, 4))
    labels = (jax.random.uniform(key(3), (4, 28)) < 0.2).astype(jnp.float32)
    variables = init(model, x)

    @jax.jit
    def loss_and_grad(params):
        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key(4)})
            return jnp.mean(jnp.logaddexp(0.0, logits) - labels * logits), logits
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, logits), grads = loss_and_grad(variables["params"])
    assert logits.shape == (4, 28) and logits.dtype == jnp.float32
    assert np.isfinite(float(loss))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path  # every block feeds the output through its own pool


def test_acp_pool_adds_the_max_beside_each_block_average():
    x = jax.random.normal(key(5), (2, 64, 64, 4))
    gap = gapnet.GapNetPLEncoder(width=8)
    acp = gapnet.GapNetPLEncoder(width=8, pool="acp")
    variables = init(gap, x)  # pooling has no parameters
    avg = np.asarray(apply(gap, variables, x))[:, 0, 0]
    both = np.asarray(apply(acp, variables, x))[:, 0, 0]
    # Per block: [avg, max]; blocks of 4, 8 and 16 channels at width 8.
    offsets = np.cumsum([0, 4, 8, 16])
    for b, c in enumerate((4, 8, 16)):
        block = both[:, 2 * offsets[b]:2 * offsets[b] + 2 * c]
        np.testing.assert_allclose(block[:, :c], avg[:, offsets[b]:offsets[b] + c], rtol=1e-6, atol=1e-6)
        assert np.all(block[:, c:] >= block[:, :c] - 1e-6)  # max >= mean


def test_per_image_standardize_ignores_per_channel_affine_changes():
    x = jax.random.uniform(key(6), (3, 64, 64, 4))
    # Image 1: the same pixels under a per-channel affine map; image 2: a blank channel.
    x = x.at[1].set(x[0] * jnp.array([0.5, 3.0, 8.0, 1.0]) + jnp.array([-0.07, 0.05, 2.0, 0.0]))
    x = x.at[2, ..., 3].set(0.3)
    encoder = gapnet.GapNetPLEncoder(width=8, per_image_standardize=True)
    out = np.asarray(apply(encoder, init(encoder, x), x))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-4)
    # A blank channel standardises to zeros, not to amplified rounding noise.
    assert np.all(np.isfinite(out[2])) and np.abs(out[2]).max() < 10


def test_bfloat16_compute_keeps_float32_params():
    encoder = gapnet.build_encoder("gapnet_pl", width=8, dtype=jnp.bfloat16)
    x = jnp.ones((1, 32, 32, 4), jnp.bfloat16)
    out, variables = jax.eval_shape(lambda: encoder.init_with_output(jax.random.key(0), x, train=False))
    assert out.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
