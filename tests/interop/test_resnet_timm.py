"""ResNet50/101 and SE-ResNeXt50 against timm: same parameter count, same logits once converted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.models import create_model
from hpa_jax.models.timm_twin import parity_error, timm_param_count

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                    "as .ci/run does")

NAMES = ["resnet50", "resnet101", "seresnext50_32x4d"]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_timm(name):
    model = create_model(name, 28, head="gap")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 4)), train=False))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"])) == timm_param_count(name)


# 32 px is the smallest input whose stride-32 map is not empty padding; 45 px makes every strided
# convolution see an odd size, where PyTorch's symmetric padding and Flax's "SAME" part ways.
# SE-ResNeXt's grouped convolutions run as `model.grouped_conv="auto"` picks on this backend
# ("split" on CPUs) and as XLA's own grouped convolution.
@pytest.mark.parametrize("name,size,grouped_conv", [("resnet50", 45, "auto"), ("resnet101", 32, "auto"),
                                                    ("seresnext50_32x4d", 32, "auto"),
                                                    ("seresnext50_32x4d", 45, "xla")])
def test_converted_logits_equal_timm(name, size, grouped_conv):
    error, expected = parity_error(name, size, grouped_conv=grouped_conv)
    assert np.abs(expected).max() > 0.1           # the comparison is not between two near-zero outputs
    assert error <= 1e-4, f"{name} at {size} px ({grouped_conv}): relative error {error:.2e}"
