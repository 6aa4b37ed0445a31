"""`python -m hpa_jax.export`: each format reloaded by its own tool gives the run's outputs; the
timm state dict converts back exactly; bad requests stop in one line with nothing written."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import traverse_util

from configs import quickstart
from hpa_jax.classes import CLASS_NAMES
from hpa_jax.evaluation import inference
from hpa_jax.export import exported, formats, onnx_model, stablehlo
from hpa_jax.models import TRACE_SIZE, create_model_from_config
from hpa_jax.models.convert import convert_state_dict, to_timm_state_dict
from hpa_jax.runtime import sharding

pytest.importorskip("jax2onnx", reason="the export extra is not installed: pip install -r requirements-export.txt")


def random_run(tmp_path, name: str, pool: str, size: int, width: int = 8,
               batch_norm: bool = False) -> exported.ExportedRun:
    """An untrained run of `name` with random BatchNorm statistics (a statistic exported to the
    wrong place shows), as `load_run` builds one."""
    config = quickstart.get_config()
    config.model.name, config.model.width, config.model.head.pool = name, width, pool
    config.model.head.batch_norm = batch_norm
    config.model.dtype, config.model.batch_norm_sync = "float32", "device"
    if pool == "gap":
        config.model.head.layers = ()              # timm's own head: global average pooling, one FC
    model = create_model_from_config(config)
    variables = model.init(jax.random.key(0), jnp.zeros((1, TRACE_SIZE if name == "inception_v4" else size, size, 4)),
                           train=False)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(np.asarray, variables)
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree.map(lambda v: (v + rng.uniform(0.5, 1.5, v.shape)).astype(np.float32),
                                                variables["batch_stats"])
    return exported.ExportedRun(workdir=tmp_path, config=config, model=model, variables=variables, step=0,
                                checkpoint="init", size=size, thresholds=np.full(28, 0.5, np.float32),
                                threshold_source="eval.threshold=0.5")


def pixels(count: int, size: int) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (count, 4, size, size)).astype(np.float32)


@pytest.mark.parametrize("name,pool,batch_norm,size", [
    ("resnet18", "gap", False, 64), ("resnet18", "acp", True, 64), ("seresnext50_32x4d", "acp", False, 64),
    ("densenet121", "acp", False, 64), ("inception_v4", "acp", False, 96), ("gapnet_pl", "acp", False, 64)])
def test_onnxruntime_gives_the_logits_of_jax_for_every_encoder(tmp_path, name, pool, batch_norm, size):
    """Every family of the zoo (the pooling rewritten for ONNX, grouped convolutions, squeeze-
    excitation, dense blocks, Inception's count-excluding average pool) with the paper's head,
    timm's, and the 2018 winner's (BatchNorm before each FC): onnxruntime at batch 3 and 1 within
    1e-5 of JAX, relative to the largest logit."""
    run = random_run(tmp_path, name, pool, size, batch_norm=batch_norm)
    path = onnx_model.export_onnx(run, tmp_path)
    images = pixels(3, size)
    for batch in (images, images[:1]):
        logits, probs = onnx_model.run_onnx(path, batch)
        reference = run.reference(batch)
        assert exported.relative_difference(logits, reference[0]) < 1e-5
        np.testing.assert_allclose(probs, reference[1], atol=1e-6)


def test_a_runs_exports_reload_with_the_probabilities_its_predict_step_gives(tiny_run, tmp_path):
    """The tiny run exported three ways: onnxruntime and the reloaded `jax.export` give the
    probabilities of the run's own predict step (the path evaluate and predict take) on its
    validation images; bioimageio.core's test passes on the package, whose rdf.yaml names the
    channels and classes and carries the thresholds; each folder has its contract."""
    results = formats.export_run(tiny_run, tmp_path / "out", ["onnx", "bioimageio", "stablehlo"], num_images=4,
                                 say=lambda line: None)
    assert [r.format for r in results] == ["onnx", "bioimageio", "stablehlo"]
    run = exported.load_run(tiny_run)
    ids, images = exported.check_images(run, 4)
    config = run.config
    config.eval.tta = (0,)
    model, mesh, variables, _ = inference.restore_variables(config, tiny_run, "best")
    step = inference.make_predict_step(model, config, mesh)
    uint8 = images.transpose(0, 2, 3, 1).astype(np.uint8)
    expected = sharding.replicated_to_host(step(variables, sharding.put_batch(mesh, np.concatenate([uint8] * 2))))[:4]

    onnx_probs = onnx_model.run_onnx(tmp_path / "out" / "onnx" / onnx_model.FILE, images)[1]
    np.testing.assert_allclose(onnx_probs, expected, atol=1e-5)
    reloaded = jax.export.deserialize(bytearray((tmp_path / "out" / "stablehlo" / stablehlo.FILE).read_bytes()))
    np.testing.assert_allclose(np.asarray(reloaded.call(images)[1]), expected, atol=1e-5)

    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    rdf = tmp_path / "out" / "bioimageio" / "rdf.yaml"
    assert test_model(rdf).status == "passed"
    description = load_description(rdf)
    assert [str(n) for n in description.inputs[0].axes[1].channel_names] == ["red", "green", "blue", "yellow"]
    assert len(description.outputs[1].axes[1].channel_names) == 28
    written = yaml.safe_load(rdf.read_text())
    assert written["config"]["hpa_jax"]["thresholds"] == pytest.approx(list(run.thresholds))
    test_input = np.load(tmp_path / "out" / "bioimageio" / "test_input.npy")
    np.testing.assert_array_equal(test_input, images[:1])
    for result in results:
        contract = json.loads((result.folder / formats.CONTRACT).read_text())
        assert contract["classes"] == list(CLASS_NAMES) and contract["checked_on"] == ids
        assert contract["input"]["shape"] == ["N", 4, run.size, run.size]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bioimageio", "onnx", "stablehlo"]


@pytest.mark.parametrize("name", ["resnet18", "seresnext50_32x4d", "densenet121", "inception_v4"])
def test_the_timm_state_dict_converts_back_to_the_variables_exactly(tmp_path, name):
    """`to_timm_state_dict` then the converter (`convert_state_dict`) returns every variable bit for
    bit: the inverse module names (InceptionV4's own `branch1_0` beside Sequential indices
    included) are the ones the converter reads."""
    run = random_run(tmp_path, name, "gap", 96 if name == "inception_v4" else 64)
    back = convert_state_dict(name, to_timm_state_dict(name, run.variables), width=8)
    flat_back, flat = traverse_util.flatten_dict(back), traverse_util.flatten_dict(run.variables)
    assert set(flat_back) == set(flat)
    for key in flat:
        np.testing.assert_array_equal(flat_back[key], flat[key])


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "hpa_jax.export", *args], capture_output=True, text=True,
                          timeout=600)


def test_bad_requests_stop_in_one_line_with_nothing_written(tiny_run, tmp_path):
    """A narrowed network has no timm weights, an unknown format is named: one line each, no
    traceback, no folder left behind."""
    out = tmp_path / "out"
    for args, message in ((["--format=timm"], "timm builds resnet18 at full width (64) only"),
                          (["--format=onnx,keras"], "expected one or more of onnx, bioimageio, timm, stablehlo")):
        result = run_export(f"--workdir={tiny_run}", f"--out={out}", *args)
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("hpa_jax.export: error:")]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not out.exists() or not any(out.iterdir())
