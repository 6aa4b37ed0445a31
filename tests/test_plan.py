"""`--mode=plan`: XLA's analysis of the very train and predict steps training compiles, the
refusals training makes, its warnings, and the command line end to end."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from hpa_jax.evaluation import inference
from hpa_jax.runtime import sharding
from hpa_jax.training import optim, plan, loop as train
from configs import quickstart
from hpa_jax.config.validate import validate
from hpa_jax.errors import ConfigError
from hpa_jax.models import create_model_from_config, encoder_module_sort_key
from hpa_jax.training.state import abstract_train_state, create_train_state
from test_cli import run_cli

# The quickstart shrunk (width-8 ResNet18 on 32 px synthetic fields, global batch 16 = 2 per device
# on the 8 devices), keeping its layer groups, E-loss weights and hard sampler, with 2 accumulation
# steps: the accumulated step's two passes are in the program analysed. The command-line test runs
# the same config, so its programs come from the compilation cache.
TINY_PLAN = {"data.synthetic.num_train": 64, "data.synthetic.num_test": 1, "data.synthetic.image_size": 32,
             "data.crop_size": 32, "data.num_folds": 4, "data.num_threads": 2, "model.width": 8,
             "model.head.layers": ((32, 0.0),), "train.batch_size": 16, "eval.batch_size": 16,
             "train.num_epochs": 2, "train.accumulation_steps": 2, "plan.measure_steps": 2}


def plan_config(tmp_path, **changes):
    config = quickstart.get_config()
    config.data.synthetic.cache_dir = str(tmp_path / "cache")
    for name, value in {**TINY_PLAN, **changes}.items():
        *parents, field = name.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[field] = value
    return config


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("plan")
    config = plan_config(tmp_path)
    return config, plan.plan(config, tmp_path / "work"), tmp_path / "work"


def compiled_train_step(config, mesh):
    """The train step built as `train.train_and_evaluate` builds it, with the stand-ins the plan
    documents (E-loss weights from made-up class counts, one step per epoch in the LR schedule:
    constants of the program, not its cost), compiled for abstract inputs of the config's shapes."""
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=1, num_epochs=config.train.num_epochs)
    model = create_model_from_config(config)
    tx = optim.make_optimizer(config.optim, schedule, module_sort_key=encoder_module_sort_key(config.model.name))
    state = jax.eval_shape(lambda: create_train_state(model, tx, jax.random.key(1), image_size=config.data.crop_size,
                                                      in_channels=config.in_channels))
    replicated, split = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
    batch, size = config.train.batch_size, config.data.crop_size
    images = jax.ShapeDtypeStruct((batch, size, size, 4), np.uint8, sharding=split)
    labels = jax.ShapeDtypeStruct((batch, 28), np.uint8, sharding=split)
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
    counts = np.tril(np.ones((28, 28), np.uint8))     # class c seen 28 - c times
    step = train.make_train_step(config, mesh, train.class_weights_for(config, counts))
    return step.jitted.lower(state, images, labels, key).compile(), state


def test_plan_reports_xla_analysis_of_the_training_step(planned):
    config, result, workdir = planned
    mesh = sharding.make_mesh()
    reference, state = compiled_train_step(config, mesh)
    memory = reference.memory_analysis()
    step = result["train_step"]
    assert step["flops_per_device"] == reference.cost_analysis()["flops"] > 0
    for field in ("argument", "output", "alias", "temp", "generated_code"):
        assert step["memory"][f"{field}_bytes"] == getattr(memory, f"{field}_size_in_bytes"), field
    assert step["memory"]["total_bytes"] == (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
                                             + memory.generated_code_size_in_bytes)
    assert (step["per_device_batch"], step["accumulation_steps"], step["image_size"]) == (2, 2, 32)

    params = traverse_util.flatten_dict(state.params).values()
    assert result["parameters"]["count"] == sum(int(np.prod(p.shape)) for p in params)
    assert result["parameters"]["params_bytes"] == 4 * result["parameters"]["count"]   # float32
    assert result["parameters"]["opt_state_bytes"] > 2 * result["parameters"]["params_bytes"]   # AdamW: mu, nu

    # the predict step as evaluation builds it, at the eval batch and the whole 32 px image
    predict = inference.make_predict_step(create_model_from_config(config), config, mesh)
    images = jax.ShapeDtypeStruct((16, 32, 32, 4), np.uint8, sharding=sharding.batch_sharding(mesh))
    compiled = predict.jitted.lower({"params": state.params, "batch_stats": state.batch_stats}, images).compile()
    assert result["predict_step"]["flops_per_device"] == compiled.cost_analysis()["flops"] > 0
    assert result["predict_step"]["memory"]["temp_bytes"] == compiled.memory_analysis().temp_size_in_bytes
    assert result["predict_step"]["image_size"] == [32, 32]

    # measured on this CPU at the configured per-device batch (a tiny step), data path timed
    measured = result["measured"]
    assert measured["per_device_batch"] == 2 and not measured["scaled"] and measured["step_seconds"] > 0
    assert measured["images_per_s_host"] == pytest.approx(measured["images_per_s_per_device"] * 8)
    data = result["data"]
    assert data["samples"] == 16 and data["configured"] == "decoded" and set(data["paths"]) == {"decoded", "packed"}
    for path in data["paths"].values():
        assert path["images_per_s_per_core"] > 0
        assert path["cores_needed"] == -(-measured["images_per_s_host"] // path["images_per_s_per_core"])
    # a copy out of memory is faster than decoding the files
    assert data["paths"]["packed"]["images_per_s_per_core"] > data["paths"]["decoded"]["images_per_s_per_core"]
    assert json.loads((workdir / "plan.json").read_text()) == json.loads(json.dumps(result))


def test_collectives_per_step_from_the_compiled_step(planned):
    """plan.json's collectives against what the config implies, counted from the model: on CPUs
    "auto" is the ordered reduction, one all-gather per gradient leaf (XLA may merge some) and the
    loss, each device sending its whole gradient to the 7 others; every BatchNorm layer two
    all-gathers (forward, backward) in each of the 2 micro-batches; the link time their bytes over
    the node's link plus a latency each."""
    config, result, _ = planned
    c = result["collectives"]
    _, state = compiled_train_step(config, sharding.make_mesh())
    param_bytes = result["parameters"]["params_bytes"]
    norms = [v for path, v in traverse_util.flatten_dict(state.batch_stats).items() if path[-1] == "mean"]
    channels, accumulation = sum(v.shape[0] for v in norms), 2
    assert (c["reduction"], c["batch_norm_sync"], c["devices"], set(c["kinds"])) == ("ordered", "global", 8,
                                                                                     {"all-gather"})
    assert 2 * accumulation * len(norms) < c["count"] <= 2 * accumulation * len(norms) + len(jax.tree.leaves(
        state.params)) + 1
    # all-gathers of a D x S result send (D - 1) S: the gradients and loss, and (mean, var) per layer and pass
    expected = 7 * (param_bytes + 4 + 2 * accumulation * 2 * 4 * channels)
    assert c["bytes_sent"] == pytest.approx(expected, rel=1e-3)
    assert c["link"]["seconds"] == pytest.approx(expected / 450e9 + c["count"] * 15e-6, rel=1e-3)
    assert c["compute_seconds"] == result["measured"]["step_seconds_at_config_batch"]


def test_flops_are_per_device(planned):
    """What the module docstring states: XLA's FLOPs of a sharded step are one device's. The
    predict step (no update that every device repeats) on 8 devices costs each an eighth of
    what one device running the whole batch reports."""
    config, result, _ = planned
    mesh = sharding.make_mesh(jax.devices()[:1])
    model, tx = plan.model_and_optimizer(config)
    state = abstract_train_state(model, tx, 4, mesh)
    predict = inference.make_predict_step(model, config, mesh)
    images = plan.abstract_batch(config, mesh, 16, 32)[0]
    one_device = plan.program_flops(
        predict.jitted.lower({"params": state.params, "batch_stats": state.batch_stats}, images).compile())
    assert result["predict_step"]["flops_per_device"] == pytest.approx(one_device / 8, rel=0.01)


@pytest.mark.parametrize("field, value, named", [
    ("batch_size", 12, "train.batch_size=12 is not divisible by the 8 devices"),
    ("accumulation_steps", 4, "train.accumulation_steps=4"),     # 2 images per device
])
def test_refuses_batches_training_refuses(tmp_path, field, value, named):
    """`--mode=plan` is refused the batches training is refused: the one check of the config
    that `hpa_jax.main` makes before any mode, for the devices there are."""
    config = plan_config(tmp_path, **{f"train.{field}": value})
    with pytest.raises(ConfigError, match=named):
        validate(config, num_devices=len(jax.devices()))


def test_warnings_without_data_and_beyond_the_device_memory(planned, tmp_path, capsys):
    """No data.dir: the data path is a warning and the rest is still planned; a target device
    smaller than the steps: both are said not to fit. With no step to run, the train step compiles
    for analysis only (`plan.ANALYSIS_ONLY`), to the same FLOPs and bytes as the one that ran."""
    config = plan_config(tmp_path, **{"data.source": "kaggle", "plan.device_memory_gb": 1e-4,   # ~100 KiB
                                      "plan.measure_steps": 0})
    result = plan.plan(config, tmp_path / "work")
    assert result["train_step"]["fits"] is False and result["predict_step"]["fits"] is False
    assert result["measured"] is None and result["data"]["error"].startswith("data.dir is not set")
    assert result["predict_step"]["image_size_from"].startswith("data.crop_size")
    ran = planned[1]["train_step"]
    assert (result["train_step"]["flops_per_device"], result["train_step"]["memory"]) == (ran["flops_per_device"],
                                                                                          ran["memory"])
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("hpa_jax: warning: the train step needs") and "plan.device_memory_gb" in line
               for line in err)
    assert any(line.startswith("hpa_jax: warning: the predict step needs") for line in err)
    assert any(line.startswith("hpa_jax: warning: data path not timed: data.dir is not set") for line in err)


def test_starving_input_pipeline_warns_naming_readers_cpus_and_the_pack_command(tmp_path):
    """Too few readers: raise them; too few CPUs to decode: the pack command for this data; too few
    to read even a packed store: read fewer pixels."""
    def result(cpus, configured, threads, workers, rate=30.0):
        return {"devices": {"memory_limit_bytes": None, "memory_limit_source": "unknown", "host_cpus": cpus},
                "train_step": {"memory": {"total_bytes": 1, "peak_bytes": 0}},
                "predict_step": {"memory": {"total_bytes": 1, "peak_bytes": 0}},
                "measured": {"images_per_s_host": 100.0},
                "data": {"source": "png files", "configured": configured, "num_threads": threads,
                         "num_workers": workers, "paths": {configured: {"images_per_s_per_core": rate,
                                                                        "cores_needed": plan.cores_needed(100.0, rate)}}}}

    config = plan_config(tmp_path, **{"data.dir": "D", "data.image_size": 768})
    assert plan.cores_needed(100.0, 30.0) == 4
    [few_readers] = plan.plan_warnings(result(8, "decoded", 1, 3), config)
    assert "4 cores are needed" in few_readers and "data.num_threads=1 x data.num_workers=3" in few_readers
    assert plan.plan_warnings(result(8, "decoded", 2, 2), config) == []
    [decoding] = plan.plan_warnings(result(2, "decoded", 2, 0), config)
    assert decoding.startswith("decoding cannot keep up") and "this host has 2 CPUs" in decoding
    assert "python -m hpa_jax.data.pack --data_dir=D --out=D/packed/train --size=768" in decoding
    assert "--config.data.packed=D/packed" in decoding
    [packed] = plan.plan_warnings(result(2, "packed", 2, 0), config)
    assert "this host has 2 CPUs" in packed and "data.image_size" in packed


def test_cli_plan(tmp_path):
    overrides = [f"--config.{name}={value}" for name, value in TINY_PLAN.items()]
    result = run_cli("--config=configs/quickstart.py", *overrides, f"--config.data.synthetic.cache_dir={tmp_path}",
                     f"--workdir={tmp_path / 'w'}", "--mode=plan")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "plan: resnet18 (acp head, float32), 8 cpu device(s) in the mesh" in out
    assert "train step     2 x 32 px per device in 2 micro-batches (global batch 16)" in out
    assert "predict step   2 x 32 px per device, 1 TTA view(s)" in out and "images/s per core" in out
    saved = json.loads((tmp_path / "w" / "plan.json").read_text())
    assert saved["train_step"]["flops_per_device"] > 0 and saved["devices"]["mesh"] == 8


def test_costly_cpu_steps_are_timed_smaller_and_scaled_by_flops(tmp_path):
    """On CPUs a step too costly to time (`plan.CPU_MEASURE_FLOPS`) runs at `plan.measure_batch`
    (rounded up to the accumulation steps) and at most `plan.measure_size` px; its FLOP rate is
    carried over to the configured step. GPUs always time the configured step."""
    config = plan_config(tmp_path, **{"plan.measure_size": 16, "plan.measure_batch": 1})
    cheap, costly = plan.CPU_MEASURE_FLOPS / 10, plan.CPU_MEASURE_FLOPS
    assert plan.measured_shape(config, 2, 2, 32, "cpu", cheap) == (2, 32)
    assert plan.measured_shape(config, 2, 2, 32, "cpu", costly) == (2, 16)
    assert plan.measured_shape(config, 8, 1, 32, "cpu", costly) == (1, 16)
    assert plan.measured_shape(config, 8, 1, 12, "cpu", costly) == (1, 12)
    assert plan.measured_shape(config, 8, 1, 32, "gpu", costly) == (8, 32)

    measured = {"per_device_batch": 1, "image_size": 16, "flops": 2e9}          # 2 GFLOP in 0.5 s: 4 GFLOP/s
    configured = {"per_device_batch": 8, "image_size": 32, "flops": 64e9}
    record = plan.throughput(0.5, measured, configured, local_devices=2)
    assert record["scaled"] and record["flops_per_s_per_device"] == pytest.approx(4e9)
    assert record["step_seconds_at_config_batch"] == pytest.approx(16.0)           # 64 GFLOP at 4 GFLOP/s
    assert record["images_per_s_per_device"] == pytest.approx(0.5) and record["images_per_s_host"] == pytest.approx(1)
    same = plan.throughput(0.5, {**configured}, configured, local_devices=1)
    assert not same["scaled"] and same["images_per_s_per_device"] == pytest.approx(16)
