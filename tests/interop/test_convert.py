"""The converter: safetensors without torch, .pth with it, the 3->4 channel stem rule, refusals
that name the offending tensor, and training's `model.pretrained` loading what it wrote."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from hpa_jax.errors import CheckpointError, ConfigError
from hpa_jax.models import convert, create_model
from hpa_jax.models.timm_twin import random_timm_model, state_dict_numpy

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                    "as .ci/run does")

NAME = "resnet50"
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def imagenet_like():
    """A 3-channel, 1000-class timm resnet50 state_dict, as ImageNet checkpoints come."""
    return state_dict_numpy(random_timm_model(NAME, num_classes=1000, in_chans=3))


def test_red_filter_goes_to_the_yellow_slot(imagenet_like):
    variables = convert.convert_state_dict(NAME, imagenet_like, include_head=False)
    stem = variables["params"]["encoder"]["conv1"]["kernel"]          # (7, 7, 4, 64)
    torch_stem = imagenet_like["conv1.weight"].transpose(2, 3, 1, 0)   # (7, 7, 3, 64)
    np.testing.assert_array_equal(stem[:, :, :3], torch_stem)
    np.testing.assert_array_equal(stem[:, :, 3], torch_stem[:, :, 0])
    assert "head" not in variables["params"]
    mean_rule = convert.convert_state_dict(NAME, imagenet_like, include_head=False, stem_rule="mean")
    np.testing.assert_allclose(mean_rule["params"]["encoder"]["conv1"]["kernel"][:, :, 3], torch_stem.mean(axis=2),
                               rtol=1e-6)


@pytest.mark.parametrize("damage,named", [
    (lambda sd: sd.pop("layer2.1.bn2.running_var"), "encoder/layer2_1/bn2/var"),
    (lambda sd: sd.__setitem__("layer9.0.conv1.weight", np.zeros((4, 4, 1, 1), np.float32)), "layer9.0.conv1.weight"),
    (lambda sd: sd.__setitem__("layer3.0.conv2.weight", np.zeros((256, 256, 1, 1), np.float32)),
     "layer3.0.conv2.weight (256, 256, 1, 1) vs params/encoder/layer3_0/conv2/kernel (3, 3, 256, 256)"),
])
def test_refuses_missing_extra_and_misshaped_tensors(imagenet_like, damage, named):
    damaged = dict(imagenet_like)
    damage(damaged)
    with pytest.raises(CheckpointError) as error:
        convert.convert_state_dict(NAME, damaged, include_head=False, source="bad.safetensors")
    message = str(error.value)
    assert "\n" not in message and message.startswith("bad.safetensors: ") and named in message


def test_head_of_another_size_is_refused_unless_left_out(imagenet_like, tmp_path):
    save_file(imagenet_like, str(tmp_path / "in1k.safetensors"))
    out = tmp_path / "with_head"
    convert.convert_checkpoint(NAME, tmp_path / "in1k.safetensors", out)
    model = create_model(NAME, 28, head="gap")
    init = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), train=False))()
    with pytest.raises(ConfigError, match="--no-head"):
        convert.apply_pretrained(init, out, NAME)


def test_pth_and_safetensors_give_the_same_variables_and_training_starts_from_them(imagenet_like, tmp_path):
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in imagenet_like.items()}}, tmp_path / "in1k.pth")
    save_file(imagenet_like, str(tmp_path / "in1k.safetensors"))
    for src in ("in1k.pth", "in1k.safetensors"):
        convert.convert_checkpoint(NAME, tmp_path / src, tmp_path / src[5:], include_head=False)
    from_pth, meta = convert.load_pretrained(tmp_path / "pth")
    from_safetensors, _ = convert.load_pretrained(tmp_path / "safetensors")
    assert meta["model"] == NAME and meta["stem_rule"] == "red" and not meta["include_head"]
    jax.tree.map(np.testing.assert_array_equal, from_pth, from_safetensors)

    model = create_model(NAME, 28)   # the paper's ACP + buffering head, trained from scratch
    init = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), train=False))()
    merged = convert.apply_pretrained(init, tmp_path / "safetensors", NAME)
    np.testing.assert_array_equal(merged["params"]["encoder"]["layer4_2"]["conv3"]["kernel"],
                                  imagenet_like["layer4.2.conv3.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(merged["batch_stats"]["encoder"]["bn1"]["mean"], imagenet_like["bn1.running_mean"])
    jax.tree.map(np.testing.assert_array_equal, merged["params"]["head"], init["params"]["head"])


def convert_command(*args) -> subprocess.CompletedProcess:
    """`python -m hpa_jax.models.convert ARGS`, as README gives it."""
    return subprocess.run([sys.executable, "-m", "hpa_jax.models.convert", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    result = convert_command("--model", NAME, "--src", tmp_path / "broken.safetensors", "--out", tmp_path / "out")
    assert result.returncode == 1
    err = result.stderr.strip()
    assert err.startswith("hpa_jax.models.convert: error: ") and "broken.safetensors" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_training_command_starts_from_converted_weights(tmp_path):
    """As a user runs it: convert an ImageNet-style checkpoint with --no-head, train with
    --config.model.pretrained (LR 0, so the encoder stays as loaded) and find the converted
    tensors in the saved checkpoint."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from test_cli import TINY, run_cli

    from configs import quickstart
    from hpa_jax.config.upgrade import training_config
    from hpa_jax.evaluation.inference import restore_variables

    state_dict = state_dict_numpy(random_timm_model("resnet18", num_classes=1000, in_chans=3))
    save_file(state_dict, str(tmp_path / "resnet18.safetensors"))
    result = convert_command("--model", "resnet18", "--src", tmp_path / "resnet18.safetensors",
                             "--out", tmp_path / "weights", "--no-head")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(classifier left out)" in result.stdout
    workdir = tmp_path / "run"
    overrides = ["--config.model.name=resnet18", "--config.model.width=64", "--config.optim.lr=0.0",
                 "--config.optim.weight_decay=0.0", f"--config.model.pretrained={tmp_path / 'weights'}"]
    result = run_cli(*TINY, *overrides, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}",
                     f"--workdir={workdir}", "--mode=train")
    assert result.returncode == 0, result.stderr[-3000:]

    _, _, variables, _ = restore_variables(training_config(quickstart.get_config(), workdir), workdir, "latest")
    stem = np.asarray(variables["params"]["encoder"]["conv1"]["kernel"])
    np.testing.assert_array_equal(stem[:, :, :3], state_dict["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stem[:, :, 3], state_dict["conv1.weight"][:, 0].transpose(1, 2, 0))
    np.testing.assert_array_equal(np.asarray(variables["params"]["encoder"]["layer4_1"]["conv2"]["kernel"]),
                                  state_dict["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
