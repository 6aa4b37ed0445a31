"""Test-time augmentation over the D4 group."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from hpa_jax.runtime import sharding
from hpa_jax.evaluation.inference import d4_transform, make_predict_step
from hpa_jax.models.heads import adaptive_concat_pool


class PointwiseACP(nn.Module):
    """Per-pixel layers and global pooling only: exactly invariant to flips and rotations."""

    @nn.compact
    def __call__(self, x, *, train):
        return nn.Dense(28)(adaptive_concat_pool(nn.relu(nn.Dense(8)(x))))


class Positional(nn.Module):
    """Flattens the image: sees orientation, so TTA must change its output."""

    @nn.compact
    def __call__(self, x, *, train):
        return nn.Dense(28)(x.reshape(x.shape[0], -1))


def test_d4_transforms_are_the_eight_symmetries_of_the_square():
    image = np.arange(3 * 3).reshape(1, 3, 3, 1)
    expected = {tuple(np.rot90(m, k).ravel()) for m in (image[0, ..., 0], image[0, ::-1, :, 0]) for k in range(4)}
    got = {tuple(np.asarray(d4_transform(jnp.asarray(image), k))[0, ..., 0].ravel()) for k in range(8)}
    assert got == expected and len(got) == 8
    np.testing.assert_array_equal(d4_transform(jnp.asarray(image), 0), image)


def predict(module, tta, images):
    config = default.get_config()
    config.eval.tta = tta
    mesh = sharding.make_mesh()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 4)), train=False)
    step = make_predict_step(module, config, mesh)
    return np.asarray(step(variables, sharding.put_batch(mesh, images)))


def test_tta_of_an_invariant_model_equals_no_tta():
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 4), dtype=np.uint8)
    all_eight = tuple(range(8))
    np.testing.assert_allclose(predict(PointwiseACP(), all_eight, images), predict(PointwiseACP(), (0,), images),
                               rtol=1e-5, atol=1e-6)
    # ... while a model that sees orientation gives a different answer (the check is not vacuous).
    assert not np.allclose(predict(Positional(), all_eight, images), predict(Positional(), (0,), images), atol=1e-4)
