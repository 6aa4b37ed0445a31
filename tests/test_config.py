"""The one check of a config (`hpa_jax.config.validate`) and the one upgrade of a saved
`config.json` (`hpa_jax.config.upgrade`)."""

import json
import os

import ml_collections
import pytest

from configs import quickstart
from hpa_jax.config import defaults, shipped, upgrade
from hpa_jax.config.validate import validate
from hpa_jax.errors import ConfigError


def with_fields(config, **fields) -> ml_collections.ConfigDict:
    """A copy of `config` with "a__b" = value set whatever the value's type (as a config.json or
    a Python config could hold it; a ConfigDict's own assignment would refuse other types)."""
    tree = config.to_dict()
    for name, value in fields.items():
        *parents, leaf = name.split("__")
        node = tree
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return ml_collections.ConfigDict(tree)


@pytest.mark.parametrize("name", shipped.list_configs())
def test_shipped_configs_and_the_defaults_validate(name):
    module = shipped.load(name)
    validate(module.get_config(), num_devices=1)
    if name not in ("default", "quickstart"):
        validate(module.get_config("kaggle+hpav18"), num_devices=1)
    validate(defaults.get_config(), num_devices=8)


@pytest.mark.parametrize("field, value, message", [
    # every choice field, named with what it may be
    ("data__source", "s3", "data.source='s3': expected one of kaggle, synthetic"),
    ("data__format", "bmp", "data.format='bmp': expected one of png, tif, jpg"),
    ("data__yellow", "blue", "data.yellow='blue': expected one of mean_rg, red, green"),
    ("data__depth16", "log", "data.depth16='log': expected one of linear, percentile"),
    ("data__resample", "nearest", "data.resample='nearest': expected one of linear, cubic, area, lanczos, bilinear, box"),
    ("data__duplicates", "remove", "data.duplicates='remove': expected one of none, drop, same_fold"),
    ("data__oversample_rounding", "up", "data.oversample_rounding='up': expected one of nearest, stochastic"),
    ("model__name", "resnet5", "model.name='resnet5': expected one of .*resnet50"),
    ("model__dtype", "float64", "model.dtype='float64': expected one of auto, float32, bfloat16"),
    ("model__grouped_conv", "fast", "model.grouped_conv='fast': expected one of auto, xla"),
    ("model__head__pool", "max", "model.head.pool='max': expected one of acp, gap"),
    ("optim__name", "adam", "optim.name='adam': expected one of sgd, adamw"),
    ("optim__schedule", "step", "optim.schedule='step': expected one of cosine, cosine_restarts"),
    ("train__reduction", "sum", "train.reduction='sum': expected one of auto, ordered, psum"),
    ("loss__name", "dice", "loss.name='dice': expected one of bce, focal, bce\\+focal"),
    ("eval__threshold_method", "best", "eval.threshold_method='best': expected one of greedy, single, label_rate"),
    ("eval__checkpoint", "last", "eval.checkpoint='last': expected 'best', 'latest', 'swa' or a step number"),
    ("swa__average", "all", "swa.average='all': expected one of last_epochs, cycle_ends"),
    ("swa__num_checkpoints", -1, "swa.num_checkpoints=-1: expected an integer >= 0"),
    ("eval__tta", (0, 8), r"eval.tta=\(0, 8\): expected D4 transform indices in 0..7"),
    ("eval__tta", (), r"eval.tta=\(\): expected D4"),
    ("checkpoint__best_metric", "f1", "checkpoint.best_metric='f1': expected one of val_macro_f1, "),
    # numbers out of range
    ("optim__lr", -1.0, r"optim.lr=-1.0: expected a number >= 0"),
    ("optim__min_lr", 0.1, r"optim.min_lr=0.1: expected a number in \[0, 0.003\]"),
    ("optim__cycle_mult", 0, "optim.cycle_mult=0: expected an integer >= 1"),
    ("optim__warmup_epochs", -1, "optim.warmup_epochs=-1: expected an integer >= 0"),
    ("optim__group_lr_multipliers", (), r"optim.group_lr_multipliers=\(\): expected one finite number >= 0"),
    ("train__num_epochs", 0, "train.num_epochs=0: expected an integer >= 1"),
    ("train__num_epochs", 2.5, "train.num_epochs=2.5: expected an integer >= 1"),
    ("train__batch_size", 0, "train.batch_size=0: expected an integer >= 1"),
    ("train__accumulation_steps", 0, "train.accumulation_steps=0: expected an integer >= 1"),
    ("train__accumulation_steps", 5, "train.batch_size=32 is not divisible by train.accumulation_steps=5"),
    ("eval__batch_size", 0, "eval.batch_size=0: expected an integer >= 1"),
    ("data__crop_size", 0, "data.crop_size=0: expected an integer >= 1"),
    ("data__fold", 5, r"data.fold=5: expected an integer in 0..4"),
    ("data__std", (0.1, 0.1, 0.1, 0.0), "data.std=.*: expected in_channels=4 numbers > 0"),
    ("data__mean", (0.1,), "data.mean=.*: expected in_channels=4 numbers"),
    ("data__sources", ("kaggle",), "data.sources entry 'kaggle' is not NAME=FORMAT:IMAGES"),
    ("loss__hard_sample_ratio", 0.0, r"loss.hard_sample_ratio=0.0: expected a number in \(0, 1\]"),
    ("loss__hard_sample_ratio", 1.5, r"loss.hard_sample_ratio=1.5: expected a number in \(0, 1\]"),
    ("loss__e_alpha", 1.0, r"loss.e_alpha=1.0: expected a number in \[0, 1\)"),
    ("eval__threshold", 1.5, r"eval.threshold=1.5: expected a number in \[0, 1\]"),
    ("eval__force_one", 1, "eval.force_one=1: expected True or False"),
    ("data__synthetic__varied_cells", 1, "data.synthetic.varied_cells=1: expected True or False"),
    ("checkpoint__keep", -1, "checkpoint.keep=-1: expected an integer >= 0"),
    ("checkpoint__every_steps", -1, "checkpoint.every_steps=-1: expected an integer >= 0"),
    ("model__head__layers", ((0, 0.5),), r"model.head.layers=\(\(0, 0.5\),\): expected \(units >= 1"),
    ("lr_find__end_lr", 1e-6, "lr_find.end_lr=1e-06: expected more than lr_find.start_lr=1e-05"),
])
def test_a_bad_value_is_a_config_error_naming_the_field(field, value, message):
    config = with_fields(quickstart.get_config(), **{field: value})
    with pytest.raises(ConfigError, match=message) as error:
        validate(config)
    assert "\n" not in str(error.value)


def test_crop_larger_than_the_images_it_is_cut_from():
    config = quickstart.get_config()            # synthetic 128 px fields, data.image_size=0
    config.data.image_size = 64
    with pytest.raises(ConfigError, match="data.crop_size=112 is larger than data.image_size=64"):
        validate(config)
    config.data.image_size = 0
    config.data.synthetic.image_size = 96      # the synthetic images' own size, where image_size is 0
    with pytest.raises(ConfigError, match=r"data.crop_size=112 is larger than the synthetic images "
                                          r"\(data.synthetic.image_size=96\)"):
        validate(config)
    config.data.source, config.data.dir, config.data.crop_size = "kaggle", "/data/hpa", 1024
    validate(config)                            # files of their own size: not known before reading them


def test_batches_against_the_devices():
    config = quickstart.get_config()            # batch 32, eval 64
    validate(config, num_devices=8)
    config.train.batch_size = 12
    with pytest.raises(ConfigError, match="train.batch_size=12 is not divisible by the 8 devices of the mesh; "
                                          "use a multiple of 8"):
        validate(config, num_devices=8)
    validate(config, num_devices=4)
    config.train.batch_size, config.eval.batch_size = 16, 20
    with pytest.raises(ConfigError, match="eval.batch_size=20 is not divisible by the 8 devices"):
        validate(config, num_devices=8)
    config.eval.batch_size, config.train.accumulation_steps = 16, 4
    validate(config)                            # 16 images in 4 micro-batches: fine on one device
    with pytest.raises(ConfigError, match=r"the per-device batch of 2 images \(train.batch_size=16 over 8 devices\) "
                                          r"is not divisible by train.accumulation_steps=4"):
        validate(config, num_devices=8)


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "senet", "densenet", "inception_v4", "gapnet"])
def test_every_paper_config_fits_1_to_16_devices_at_the_nearest_batch(name):
    """`devices.fit_to_devices` (what `hpa_jax.main` does before the check): each paper batch that
    a device count does not divide becomes the multiple of it nearest the paper's (brute force over
    the multiples, a tie going up), said in one line; one that fits is the same config."""
    from hpa_jax.config import devices
    from hpa_jax.config.shipped import load

    config = load(name).get_config()
    paper = config.train.batch_size
    for count in (1, 2, 4, 8, 16):
        said = []
        fitted = devices.fit_to_devices(config, count, say=said.append)
        validate(fitted, num_devices=count)
        nearest = min(range(count, 4 * paper, count), key=lambda m: (abs(m - paper), -m))
        assert fitted.train.batch_size == nearest
        assert fitted.optim.lr == config.optim.lr and config.train.batch_size == paper   # a copy
        if paper % count:
            assert said[0].startswith(f"train.batch_size={paper} does not split over {count} devices: training "
                                      f"with {nearest} ({nearest // count} a device), the learning rate as configured")
        else:
            assert fitted is config and not said


def test_fitting_keeps_whole_micro_batches_and_rounds_evaluation_up():
    from hpa_jax.config import devices

    config = quickstart.get_config()
    config.train.batch_size, config.train.accumulation_steps, config.eval.batch_size = 74, 2, 20
    said = []
    fitted = devices.fit_to_devices(config, 8, say=said.append)
    assert (fitted.train.batch_size, fitted.eval.batch_size) == (80, 24)   # 16s: 64 or 80, nearer 80
    validate(fitted, num_devices=8)
    assert said == ["train.batch_size=74 does not split over 8 devices x 2 accumulation steps: training with 80 "
                    "(10 a device in 2 micro-batches), the learning rate as configured (+8.1% images a step)",
                    "eval.batch_size=20 does not split over 8 devices: evaluating with 24"]
    config.train.batch_size = 3
    assert devices.fit_to_devices(config, 16, say=said.append).train.batch_size == 32   # at least 1 a device x 2


def test_fields_not_in_the_defaults_or_missing_from_them():
    config = quickstart.get_config()
    config.train.bogus = 1
    config.metric = "macro_f1"
    with pytest.raises(ConfigError, match="unknown config fields metric, train.bogus: not a field of "):
        validate(config)
    tree = quickstart.get_config().to_dict()
    del tree["loss"]["e_alpha"]
    with pytest.raises(ConfigError, match="the config lacks the field loss.e_alpha"):
        validate(ml_collections.ConfigDict(tree))
    # model.encoder_options holds a family's own keywords: free names, checked against the encoder.
    gapnet = shipped.load("gapnet").get_config()
    validate(gapnet)
    gapnet.model.encoder_options.extra_stage_convs = 2
    with pytest.raises(ConfigError, match="model.encoder_options .* do not fit gapnet_pl"):
        validate(gapnet)


def saved_json(config) -> dict:
    """`config` as a run's config.json holds it (what training writes)."""
    return json.loads(config.to_json_best_effort())


def test_upgrade_brings_an_older_config_json_up_to_todays_fields(tmp_path):
    """A config.json written before `train.reduction` and `checkpoint.best_metric` existed, still
    with the long-removed `metric`: today's defaults fill in, its own values stay, `metric` goes."""
    config = quickstart.get_config()
    config.optim.lr, config.model.head.layers, config.eval.tta = 0.123, ((64, 0.1), (32, 0.0)), (0, 4)
    old = saved_json(config)
    del old["train"]["reduction"], old["checkpoint"]["best_metric"]
    old["metric"] = "macro_f1"
    old["data"]["gone"] = 1

    upgraded = upgrade.upgrade(old)
    today = defaults.get_config()
    assert upgraded.train.reduction == today.train.reduction == "auto"
    assert upgraded.checkpoint.best_metric == today.checkpoint.best_metric == "val_macro_f1_fitted"
    assert "metric" not in upgraded and "gone" not in upgraded.data
    assert upgraded.optim.lr == 0.123 and upgraded.model.name == "resnet18"
    assert upgraded.model.head.layers == ((64, 0.1), (32, 0.0)) and upgraded.eval.tta == (0, 4)  # tuples again
    assert upgraded.data.dir is None and upgraded.data.mean == tuple(config.data.mean)
    validate(upgraded)
    assert upgraded.to_dict() == with_fields(config).to_dict()   # nothing else changed

    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert upgrade.read(path).to_dict() == upgraded.to_dict()


def test_reading_a_saved_config_that_cannot_work_is_one_line_naming_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match=f"{path}: expected a config"):
        upgrade.read(path)
    old = saved_json(quickstart.get_config())
    old["loss"]["name"] = "dice"
    path.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=f"{path}: loss.name='dice': expected one of "):
        upgrade.read(path)


def test_evaluate_takes_the_model_from_an_older_config_json(tmp_path):
    """`training_config` (evaluate, predict) on a run saved before `model.grouped_conv`: the
    run's model and optimiser, today's defaults where it has no value, the command line's rest."""
    from hpa_jax.config.upgrade import training_config

    trained = quickstart.get_config()
    trained.model.width, trained.data.crop_size = 8, 48
    old = saved_json(trained)
    del old["model"]["grouped_conv"], old["train"]["reduction"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    given = quickstart.get_config()
    given.model.grouped_conv, given.eval.batch_size = "xla", 8
    config = training_config(given, tmp_path)
    assert config.model.width == 8 and config.data.crop_size == 48 and config.model.grouped_conv == "xla"
    assert config.eval.batch_size == 8 and config.train.reduction == "auto"
    validate(config)


def test_auto_choices_follow_the_backend_and_ordered_asks_xla_for_deterministic_gpu_kernels(monkeypatch, tmp_path):
    """"auto": bfloat16 compute and the psum all-reduce on GPUs and TPUs, float32 and the ordered sum
    on CPUs (this machine: the tests' 1 x 8 = 2 x 4 equality rests on it); a run that asks for
    "ordered" gets XLA's deterministic GPU kernels, once in XLA_FLAGS before any backend starts."""
    import jax.numpy as jnp

    from hpa_jax.models import compute_dtype
    from hpa_jax.runtime import startup
    from hpa_jax.runtime.sharding import resolve_reduction

    assert [compute_dtype("auto", p) for p in ("gpu", "tpu", "cpu")] == [jnp.bfloat16, jnp.bfloat16, jnp.float32]
    assert compute_dtype("auto") == jnp.float32 and compute_dtype("float16", "gpu") == jnp.float16
    assert [resolve_reduction("auto", p) for p in ("gpu", "tpu", "cpu")] == ["psum", "psum", "ordered"]
    assert resolve_reduction("auto") == "ordered" and resolve_reduction("ordered", "gpu") == "ordered"

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))   # leave this process's JAX settings alone
    monkeypatch.setenv("JAX_THREEFRY_PARTITIONABLE", "0")
    startup.start_up(tmp_path)
    assert "deterministic" not in os.environ["XLA_FLAGS"]
    for _ in range(2):
        startup.start_up(tmp_path, deterministic_gpu=True)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 --xla_gpu_deterministic_ops=true"
