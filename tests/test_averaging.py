"""`--mode=swa`: the average is the plain mean of the chosen checkpoints, the recomputed BatchNorm
statistics are every training batch's moments averaged (checked against the layers' inputs
captured and reduced in numpy), the result is what `eval.checkpoint=swa` restores, and bad
requests are one line."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import traverse_util

from hpa_jax.config.validate import validate
from hpa_jax.data import pipeline
from hpa_jax.errors import CheckpointError, ConfigError
from hpa_jax.evaluation import inference
from hpa_jax.models import create_model_from_config
from hpa_jax.models.layers import BatchNorm
from hpa_jax.runtime import checkpoint, sharding
from hpa_jax.training import averaging
from hpa_jax.workdir import Workdir
from test_cli import TINY, run_cli
from test_train_step import initial_state, tiny_config


def fake_run(tmp_path, config, epochs: int, kept_steps, steps_per_epoch: int = 3) -> dict:
    """A run folder as training leaves it, without training: `metrics.jsonl` with one record per
    epoch (every second epoch a cycle end) and, at `kept_steps`, checkpoints of random variables;
    returns {step: variables as numpy}."""
    records = [{"epoch": e, "step": e * steps_per_epoch, "cycle_end": e % 2 == 0} for e in range(1, epochs + 1)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    Workdir(tmp_path).metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    mesh = sharding.make_mesh()
    target = inference.variables_target(create_model_from_config(config), config, mesh)
    rng = np.random.default_rng(0)
    manager = checkpoint.checkpoint_manager(tmp_path, keep=epochs, writer=True)
    saved = {}
    for step in kept_steps:
        saved[step] = jax.tree.map(lambda t: rng.normal(0.0, 0.1, t.shape).astype(np.float32), target)
        checkpoint.save(manager, step, saved[step], {checkpoint.BEST_METRIC: 0.5})
    checkpoint.wait(manager)
    return saved


def synthetic_run_config(tmp_path, name: str = "resnet18"):
    config = tiny_config()
    config.model.name = name
    config.data.synthetic.num_train = 64        # 48 training images in 4 folds: 3 batches of 16
    config.data.synthetic.num_test = 1
    config.data.synthetic.image_size = 32
    config.data.synthetic.cache_dir = str(tmp_path / "cache")
    config.data.num_folds = 4
    config.train.batch_size = 16
    config.swa.num_checkpoints = 3
    return config


@pytest.mark.parametrize("name", ["resnet18", "gapnet_pl"])
def test_the_average_of_the_last_epochs_is_what_eval_checkpoint_swa_restores(tmp_path, name):
    """The params `eval.checkpoint=swa` restores are numpy's mean of the last 3 epochs'; the
    BatchNorm statistics are recomputed (not the checkpoints' mean); GapNet-PL has none to."""
    config = synthetic_run_config(tmp_path, name)
    saved = fake_run(tmp_path / "run", config, epochs=5, kept_steps=(3, 9, 12, 15))
    record = averaging.average(config, tmp_path / "run")
    assert record["epochs"] == [3, 4, 5] and record["steps"] == [9, 12, 15]
    assert json.loads(Workdir(tmp_path / "run").averaged_record.read_text()) == record

    _, _, restored, step = inference.restore_variables(config, tmp_path / "run", "swa")
    assert step == 15
    chosen = [saved[s] for s in (9, 12, 15)]
    mean = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *chosen)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-8),
                 restored["params"], mean["params"])
    if name == "gapnet_pl":
        assert restored["batch_stats"] == {} and record["batch_norm_batches"] == 0
    else:
        assert record["batch_norm_batches"] == 3
        got, averaged = (traverse_util.flatten_dict(jax.device_get(v["batch_stats"])) for v in (restored, mean))
        assert set(got) == set(averaged) and all(np.isfinite(v).all() for v in got.values())
        assert not any(np.allclose(got[key], averaged[key]) for key in got)

    # a rerun with other settings replaces it: the cycle ends (epochs 2 and 4) are not all kept
    config.swa.average, config.swa.num_checkpoints = "cycle_ends", 2
    with pytest.raises(CheckpointError, match=r"no checkpoint of epoch\(s\) 2 \(steps 6\), which the average of 2 "
                                              r"\(swa.num_checkpoints\) needs; training kept steps 3, 9, 12, 15"):
        averaging.average(config, tmp_path / "run")


def test_batch_norm_statistics_are_every_batchs_moments_averaged(synthetic_store):
    """Against the inputs of every BatchNorm layer captured in a plain forward over each whole
    training batch (one device, each layer's own moments), reduced in float64: the mean over the
    epoch's batches of each batch's mean and (biased) variance; the same on 1 device as on 8."""
    config = tiny_config()
    config.train.batch_size = 16
    source = synthetic_store(48)                 # 3 batches of 16
    epoch = 7
    results = []
    for devices in (jax.devices(), jax.devices()[:1]):
        mesh = sharding.make_mesh(devices)
        state = initial_state(config, mesh)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        stats, batches = averaging.recompute_batch_stats(create_model_from_config(config), config, mesh, variables,
                                                         source, epoch=epoch)
        assert batches == 3
        results.append(traverse_util.flatten_dict(jax.device_get(stats)))

    config.model.batch_norm_sync = "device"      # no mesh axis: the whole batch's moments in one forward
    plain = create_model_from_config(config)
    captured = {}

    def capture(next_fun, args, kwargs, context):
        if isinstance(context.module, BatchNorm):
            captured.setdefault(context.module.path, []).append(np.asarray(args[0], np.float64))
        return next_fun(*args, **kwargs)

    batches = pipeline.train_batches_from_config(config, source, epoch=epoch)
    for batch in batches:
        images = pipeline.normalize(pipeline.dihedral(batch["image"], batch["d4"]), config.data.mean, config.data.std)
        with nn.intercept_methods(capture):
            plain.apply(variables, images, train=True, rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    batches.close()
    expected = {}
    for path, inputs in captured.items():
        assert len(inputs) == 3
        axes = (0, 1, 2)
        expected[(*path, "mean")] = np.mean([x.mean(axes) for x in inputs], axis=0)
        expected[(*path, "var")] = np.mean([np.square(x - x.mean(axes)).mean(axes) for x in inputs], axis=0)
    for got in results:
        assert set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=2e-4, atol=1e-5, err_msg=str(key))
    for key in expected:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, err_msg=str(key))


def test_which_epochs_and_too_many_are_one_line():
    config = tiny_config()                       # keep 2, 16 epochs, one cosine cycle
    assert averaging.how_many(config) == 2
    config.train.num_epochs = 1
    assert averaging.how_many(config) == 1       # every epoch checkpoint training keeps
    config.swa.average, config.optim.schedule, config.train.num_epochs = "cycle_ends", "cosine_restarts", 12
    config.optim.cycle_epochs = 4
    assert averaging.how_many(config) == 3       # every cycle end
    config.swa.num_checkpoints = 2
    assert averaging.how_many(config) == 2
    records = [{"epoch": e, "step": 3 * e, "cycle_end": e % 2 == 0} for e in range(1, 6)]
    assert [r["epoch"] for r in averaging.averaged_epochs(records, "last_epochs", 3)] == [3, 4, 5]
    assert [r["epoch"] for r in averaging.averaged_epochs(records, "cycle_ends", 2)] == [2, 4]
    with pytest.raises(ConfigError, match=r"swa.average='last_epochs' of 6 checkpoints \(swa.num_checkpoints\): "
                                          r"the run has 5 epochs trained; average at most 5, or train on"):
        averaging.averaged_epochs(records, "last_epochs", 6)
    with pytest.raises(ConfigError, match=r"the run has 2 cycle ends trained"):
        averaging.averaged_epochs(records, "cycle_ends", 3)


@pytest.mark.parametrize("fields, message", [
    ({"swa.num_checkpoints": 4}, r"swa.num_checkpoints=4 is more than checkpoint.keep=2, the epoch checkpoints "
                                 r"training keeps; train with checkpoint.keep >= 4"),
    ({"checkpoint.keep": 0}, r"swa.num_checkpoints=0 averages every epoch checkpoint training keeps, and "
                             r"checkpoint.keep=0 keeps none"),
    ({"swa.num_checkpoints": 13, "checkpoint.keep": 20}, r"swa.num_checkpoints=13 is more than train.num_epochs=12"),
    ({"swa.average": "cycle_ends", "swa.num_checkpoints": 3, "optim.schedule": "cosine_restarts",
      "optim.cycle_epochs": 5},
     r"swa.num_checkpoints=3 is more than the 2 cycle end\(s\) of optim.schedule='cosine_restarts' in "
     r"train.num_epochs=12 \(epochs 5, 10\)"),
    ({"swa.average": "cycle_ends", "optim.schedule": "cosine_restarts", "optim.cycle_epochs": 20},
     r"swa.average='cycle_ends': optim.schedule='cosine_restarts' ends no cycle in train.num_epochs=12"),
])
def test_start_up_check_when_averaging(fields, message):
    config = tiny_config()
    config.train.num_epochs = 12
    for key, value in fields.items():
        section, field = key.split(".")
        config[section][field] = value
    validate(config)                             # not averaging: nothing to keep
    with pytest.raises(ConfigError, match=message) as error:
        validate(config, averaging=True)
    assert "\n" not in str(error.value)


def test_no_average_yet_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match=r"swa: no checkpoint found; average the run's checkpoints first "
                                              r"\(--mode=swa\)"):
        inference.restore_variables(tiny_config(), tmp_path, "swa")


def test_train_swa_evaluate_predict_on_the_command_line(tmp_path):
    common = [*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", f"--workdir={tmp_path / 'run'}",
              "--config.train.num_epochs=3", "--config.checkpoint.keep=2"]
    result = run_cli(*common, "--config.eval.checkpoint=swa", "--mode=train,swa,evaluate,predict")   # N: keep, 2
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    swa = json.loads((tmp_path / "run" / "swa.json").read_text())
    assert swa["steps"] == [r["step"] for r in records[1:]] and swa["batch_norm_batches"] == records[0]["step"]
    evaluation = json.loads((tmp_path / "run" / "eval_metrics.json").read_text())
    assert evaluation["checkpoint"] == "swa" and evaluation["checkpoint_step"] == records[-1]["step"]
    assert f"checkpoint swa, the average up to step {records[-1]['step']}:" in result.stdout
    assert (tmp_path / "run" / "submission.csv").is_file()

    # more than the run kept (its config.json's checkpoint.keep=2): one line before anything is read
    again = run_cli(*common, "--config.swa.num_checkpoints=3", "--mode=swa")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        "hpa_jax: error: swa.num_checkpoints=3 is more than checkpoint.keep=2, the epoch checkpoints training "
        "keeps; train with checkpoint.keep >= 3")
