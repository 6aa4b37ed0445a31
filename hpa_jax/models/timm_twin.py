"""A timm model and its converted Flax twin on the same random input: the parity that
tests/interop asserts and `scripts/benchmark.py models` reports.

Needs torch and timm (requirements-interop.txt, the `interop` extra); they are imported when a
function is called, so the package imports without them.
"""

import jax
import numpy as np

from hpa_jax.models import create_model
from hpa_jax.models.convert import convert_state_dict


def random_timm_model(name: str, *, num_classes: int = 28, in_chans: int = 4, seed: int = 0):
    """timm's model in eval mode with every BatchNorm given random affine parameters and running
    statistics, so that a BatchNorm mapped to the wrong place (or left at its init) shows up."""
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """A torch model's state_dict as numpy arrays, keyed as in PyTorch."""
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def parity_error(name: str, size: int, batch: int = 2, grouped_conv: str = "auto") -> tuple[float, np.ndarray]:
    """max |flax - timm| / max |timm| over the logits of a random batch, and timm's logits; our
    model's grouped convolutions (if any) run with `grouped_conv`."""
    import torch  # noqa: PLC0415

    timm_model = random_timm_model(name)
    torch.manual_seed(1)
    x = torch.randn(batch, 4, size, size)
    with torch.no_grad():
        expected = timm_model(x).numpy()
    variables = convert_state_dict(name, state_dict_numpy(timm_model))
    model = create_model(name, 28, head="gap", grouped_conv=grouped_conv)
    ours = jax.jit(lambda v, images: model.apply(v, images, train=False))(variables, x.numpy().transpose(0, 2, 3, 1))
    ours = np.asarray(jax.device_get(ours))
    return float(np.abs(ours - expected).max() / np.abs(expected).max()), expected


def timm_param_count(name: str) -> int:
    """Parameters of timm's model with 4 input channels and 28 classes."""
    import timm  # noqa: PLC0415

    model = timm.create_model(name, pretrained=False, num_classes=28, in_chans=4)
    return sum(p.numel() for p in model.parameters())
