"""DenseNet121 against timm's own: same parameter count, same logits from converted weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.models import create_model, densenet
from hpa_jax.models.timm_twin import parity_error, timm_param_count

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                    "as .ci/run does")

SMALLEST = densenet.MIN_INPUT_SIZE   # 29 px; 28 leaves a 1x1 map before the last transition


def test_parameter_count_equals_timm():
    model = create_model("densenet121", 28, head="gap")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 4)), train=False))
    ours = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))
    assert ours == timm_param_count("densenet121") == 6_985_692


def test_converted_weights_give_timms_logits():
    """Eval mode at the smallest size timm accepts; an odd size also checks that the strided
    conv and max-pool pad both sides as PyTorch does and the average pools floor as it does.
    Measured max relative error: about 1e-6."""
    error, expected = parity_error("densenet121", SMALLEST)
    assert np.abs(expected).max() > 0.1
    assert error <= 1e-4, error
