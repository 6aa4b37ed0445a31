"""InceptionV4 against timm: same parameter count, same logits once converted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.models import create_model, inception
from hpa_jax.models.timm_twin import parity_error, timm_param_count

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                    "as .ci/run does")

NAME = "inception_v4"


def test_parameter_count_equals_timm():
    model = create_model(NAME, 28, head="gap")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 4)), train=False))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == timm_param_count(NAME)


def test_converted_logits_equal_timm():
    """At the smallest input, 75 px, every stage still sees a map larger than 1 x 1 except the
    InceptionC blocks, whose 1 x 1 map still tells count_include_pad=False from True."""
    error, expected = parity_error(NAME, inception.MIN_INPUT_SIZE)
    assert np.abs(expected).max() > 0.1           # the comparison is not between two near-zero outputs
    assert error <= 1e-4, f"{NAME} at {inception.MIN_INPUT_SIZE} px: relative error {error:.2e}"
