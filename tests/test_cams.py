"""Class activation maps: Grad-CAM of a GAP + linear head is the exact CAM, and a tiny model trained
a few steps to find a nuclear class puts its map's heat on the nuclei."""

import jax
import jax.numpy as jnp
import numpy as np

from hpa_jax.explain import maps as cams, gradcam as explain
from hpa_jax.runtime import sharding
from hpa_jax.training import optim, loop as train
from hpa_jax.data import pipeline, synthetic
from hpa_jax.models import create_model_from_config
from hpa_jax.training.state import create_train_state
from test_train_step import tiny_config

NUCLEOPLASM = 0
CYTOPLASMIC = (25, 23, 6, 21)   # cytosol, mitochondria, ER, plasma membrane: one under every field


def test_grad_cam_of_a_gap_linear_head_is_the_exact_cam():
    """For logits = mean_hw(F) @ W + b, class c's Grad-CAM is relu(F @ W[:, c]) / (h * w): Zhou et
    al.'s CAM, computed here by hand from the parameters, against `explain.grad_cam` (the maps of
    the jitted step)."""
    config = tiny_config()
    config.model.head.pool, config.model.head.layers = "gap", ()
    model = create_model_from_config(config)
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 4), dtype=np.uint8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 96, 96, 4)), train=False)
    encoder_vars, head_vars = explain.split_variables(variables)
    fmap = jax.jit(lambda v, x: model.encoder.apply(v, x, train=False))(
        encoder_vars, pipeline.normalize(images, config.data.mean, config.data.std))
    maps = jax.jit(lambda v, f: explain.grad_cam(model, v, f))(head_vars, fmap)
    kernel = variables["params"]["head"]["fc"]["kernel"]                     # (K, C)
    expected = jax.nn.relu(jnp.einsum("bhwk,kc->bchw", fmap, kernel)) / (fmap.shape[1] * fmap.shape[2])
    assert maps.shape == (2, 28, 3, 3) and float(expected.max()) > 0
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-7)


def nuclear_fields(count: int, size: int, seed: int):
    """Fields each with one cytoplasmic class, every other pair of them with Nucleoplasm too (green
    filling the nuclei): the nuclei are the only place telling the two kinds apart."""
    images, labels = [], np.zeros((count, 28), np.float32)
    for i in range(count):
        classes = [CYTOPLASMIC[i % 4]] + ([NUCLEOPLASM] if (i // 4) % 2 == 0 else [])
        images.append(synthetic.render_field(classes, size, np.random.default_rng([seed, i])))
        labels[i, classes] = 1
    return np.stack(images), labels


def nuclei_mask(image: np.ndarray) -> np.ndarray:
    """The nuclei, from the blue (nucleus) channel alone: above a quarter of its 5-99th percentile range."""
    blue = image[..., 2].astype(np.float32)
    low, high = np.percentile(blue, (5, 99))
    return blue > low + 0.25 * (high - low)


def test_heat_of_a_nuclear_class_lies_on_the_nuclei():
    config = tiny_config()
    config.optim.name, config.optim.lr, config.optim.weight_decay = "adamw", 3e-3, 0.0
    mesh = sharding.make_mesh(jax.devices()[:1])   # one device: 8 simulated ones only slow this down
    model = create_model_from_config(config)
    tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr)
    state = jax.device_put(create_train_state(model, tx, jax.random.key(0), image_size=64, in_channels=4),
                           sharding.replicated(mesh))
    step = train.make_train_step(config, mesh)
    images, labels = nuclear_fields(96, 64, seed=1)
    rng = np.random.default_rng(0)
    for i in range(50):
        rows = rng.choice(len(images), 16, replace=False)
        state, _ = step(state, *sharding.put_batch(mesh, (images[rows], labels[rows])), jax.random.key(i))

    test_images, test_labels = nuclear_fields(16, 192, seed=2)     # larger fields: finer maps
    test_images = test_images[test_labels[:, NUCLEOPLASM] == 1]     # the 8 with Nucleoplasm
    explain_step = explain.make_explain_step(model, config, mesh, features=False, cam_shifts=4)
    maps = np.asarray(explain_step({"params": state.params, "batch_stats": state.batch_stats},
                                   sharding.put_batch(mesh, test_images))["cams"])
    assert maps.shape == (8, 28, 24, 24)
    ratios, nuclear_share, other_share = [], [], []
    for image, label_maps, cytoplasmic in zip(test_images, maps, CYTOPLASMIC * 2):
        inside = nuclei_mask(image)
        heat = cams.resize_map(label_maps[NUCLEOPLASM], *inside.shape)
        share = heat[inside].sum() / heat.sum()
        ratios.append((share / inside.mean()) / ((1 - share) / (1 - inside.mean())))   # heat per pixel, in / out
        nuclear_share.append(share)
        other = cams.resize_map(label_maps[cytoplasmic], *inside.shape)
        other_share.append(other[inside].sum() / other.sum())
    # More heat per pixel inside the nuclei than outside, in every field, and on the nuclei more than
    # the map of the field's cytoplasmic class puts there.
    assert min(ratios) > 1.4 and np.mean(ratios) > 2.0, ratios
    assert np.mean(nuclear_share) > np.mean(other_share) + 0.05, (nuclear_share, other_share)
