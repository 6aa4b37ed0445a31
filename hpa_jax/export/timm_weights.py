"""`--format=timm`: the encoder as timm's state dict (safetensors), for PyTorch users.

    model = timm.create_model(NAME, in_chans=4, num_classes=28)   # num_classes=0 for the ACP head
    model.load_state_dict(safetensors.torch.load_file("timm.safetensors"))

timm's model takes the normalised image (`export.json`'s mean and std, on 0-255 pixels). With
timm's own classifier (`model.head.pool="gap"`, no buffering layers) `timm.safetensors` holds it
and the model's logits are ours. With another head (the paper's ACP + buffering layers),
`timm.safetensors` is the encoder alone and `head.safetensors` the head, keyed
`head.<layer>.<weight|bias|running_mean|running_var>` in PyTorch's layout (Linear weights
(out, in)): concat(mean, max) of the feature map over its spatial axes, then for each
`head.buffer<i>` Linear -> ReLU (dropout only in training), then `head.fc`; with
`model.head.batch_norm` each Linear is preceded by BatchNorm1d `head.buffer<i>_bn` (`head.fc_bn`
before `head.fc`). `torch_head` builds exactly that.
"""

import pathlib

import numpy as np

from hpa_jax.errors import ConfigError
from hpa_jax.export.exported import ExportedRun, relative_difference
from hpa_jax.export.onnx_model import require
from hpa_jax.models import FAMILY_OF
from hpa_jax.models.convert import convert_state_dict, head_state_dict, to_timm_state_dict

FILE, HEAD_FILE = "timm.safetensors", "head.safetensors"


def timm_head(run: ExportedRun) -> bool:
    """Whether the run's head is timm's own classifier (global average pooling, one FC)."""
    return run.head == "gap" and not run.config.model.head.layers and not run.config.model.head.batch_norm


def check_exportable(run: ExportedRun) -> None:
    """A ConfigError, before any work, for a run that has no timm counterpart."""
    if FAMILY_OF[run.name].TIMM_CLASSIFIER is None:
        raise ConfigError(f"{run.name} has no timm counterpart: no timm weights to export")
    if run.config.model.width != 64:
        raise ConfigError(f"model.width={run.config.model.width}: timm builds {run.name} at full width (64) only, "
                          f"so a narrowed network has no timm weights")
    if run.config.model.encoder_options:
        raise ConfigError(f"model.encoder_options {dict(run.config.model.encoder_options)} change {run.name} "
                          f"away from timm's: no timm weights to export")


def export_timm(run: ExportedRun, out: pathlib.Path) -> list[pathlib.Path]:
    """Writes `timm.safetensors` (and `head.safetensors` for a head timm does not have)."""
    from safetensors.numpy import save_file  # noqa: PLC0415

    check_exportable(run)

    tensors = to_timm_state_dict(run.name, run.variables)
    paths = [out / FILE]
    save_file(tensors, str(paths[0]), metadata={"timm_model": run.name, "in_chans": "4",
                                                "num_classes": "28" if timm_head(run) else "0"})
    if not timm_head(run):
        paths.append(out / HEAD_FILE)
        save_file(head_state_dict(run.variables), str(paths[1]), metadata={"pool": run.head})
    return paths


def round_trip_exact(run: ExportedRun, path: pathlib.Path) -> bool:
    """Whether the written state dict converts back (`convert_state_dict`) to the run's encoder
    variables bit for bit; no torch needed."""
    from safetensors.numpy import load_file  # noqa: PLC0415
    from flax import traverse_util  # noqa: PLC0415

    back = traverse_util.flatten_dict(convert_state_dict(run.name, load_file(str(path)), include_head=timm_head(run),
                                                         width=run.config.model.width))
    ours = traverse_util.flatten_dict(run.variables)
    return set(back) <= set(ours) and all(np.array_equal(back[k], ours[k]) for k in back) \
        and all(k in back for k in ours if k[1] == "encoder")


def torch_head(tensors: dict, config_head):
    """The ACP / buffering head as a torch module from `head.safetensors`' tensors (the key map of
    the module doc); `config_head` is the run's `model.head`."""
    torch = require("torch")
    nn = torch.nn

    def linear(name):
        weight = torch.as_tensor(tensors[f"head.{name}.weight"])
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        layer.load_state_dict({"weight": weight, "bias": torch.as_tensor(tensors[f"head.{name}.bias"])})
        return layer

    def norm(name):
        layer = nn.BatchNorm1d(tensors[f"head.{name}.weight"].shape[0], eps=1e-5)
        layer.load_state_dict({k: torch.as_tensor(tensors[f"head.{name}.{k}"]) for k in
                               ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
        return layer

    layers = []
    for i in range(len(config_head.layers)):
        layers += ([norm(f"buffer{i}_bn")] if config_head.batch_norm else []) + [linear(f"buffer{i}"), nn.ReLU()]
    layers += ([norm("fc_bn")] if config_head.batch_norm else []) + [linear("fc")]
    pool = config_head.pool

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*layers)

        def forward(self, features):    # (N, C, h, w)
            pooled = features.mean(dim=(2, 3))
            if pool == "acp":
                pooled = torch.cat([pooled, features.amax(dim=(2, 3))], dim=1)
            return self.layers(pooled)

    return Head().eval()


def check_timm(run: ExportedRun, paths: list[pathlib.Path], images: np.ndarray, reference) -> float:
    """timm's logits (with `torch_head` for another head) against JAX's, on the normalised images."""
    torch, timm = require("torch"), require("timm")
    from safetensors.numpy import load_file  # noqa: PLC0415
    model = timm.create_model(run.name, pretrained=False, in_chans=run.config.in_channels,
                              num_classes=28 if timm_head(run) else 0)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in load_file(str(paths[0])).items()}, strict=True)
    model.eval()
    mean = np.asarray(run.config.data.mean, np.float32)[None, :, None, None] * 255
    std = np.asarray(run.config.data.std, np.float32)[None, :, None, None] * 255
    x = torch.as_tensor((images - mean) / std)
    with torch.no_grad():
        if timm_head(run):
            logits = model(x)
        else:
            logits = torch_head(load_file(str(paths[1])), run.config.model.head)(model.forward_features(x))
    return relative_difference(logits.numpy(), reference[0])
