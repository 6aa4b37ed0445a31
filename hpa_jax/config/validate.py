"""The one check of a whole config, made before any work starts (`hpa_jax.main`, and wherever a
run's saved config is read back): its fields are those of `defaults.get_config()`, every choice
field holds one of its choices, every number is in its range, and the batches fit the crop, the
accumulation steps and, given the device count, the devices. A bad value is a one-line
`ConfigError` naming the field and what it may be.

The code that uses a config relies on this check instead of repeating it; library functions
that are also called with plain arguments (`create_model(name)`, `apply_policy(groups, policy)`,
...) keep their own.
"""

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from hpa_jax.config import defaults
from hpa_jax.errors import ConfigError

# Subtrees whose keys are free: a model family's own keywords (checked by building the encoder).
OPEN_FIELDS = ("model.encoder_options",)
DTYPES = ("auto", "float32", "bfloat16", "float16")
NAMED_CHECKPOINTS = ("best", "latest", "swa")   # "swa": `--mode=swa`'s average (`checkpoint.AVERAGED`)
D4_TRANSFORMS = 8


def validate(config, num_devices: int | None = None, *, needs_data: bool = False, averaging: bool = False) -> None:
    """Raises a one-line ConfigError at the first field of `config` that cannot work; with
    `num_devices`, the batch sizes must also split evenly over that many devices. `needs_data`: the
    work will read the dataset (every mode but plan), so a Kaggle-layout source needs `data.dir`.
    `averaging`: the command averages checkpoints (`--mode=swa`), so the run must keep as many as
    `swa.num_checkpoints` asks for."""
    check_fields(config)
    _check_top(config)
    _check_data(config, needs_data)
    _check_model(config)
    _check_optim(config)
    _check_batches(config, num_devices)
    _check_loss(config)
    _check_eval(config)
    _check_checkpoint(config)
    _check_swa(config, averaging)
    _check_lr_find(config)
    _check_plan(config)


def check_fields(config) -> None:
    """The config's fields are today's, no more, no fewer: an unknown field (a misspelt name) would
    otherwise be ignored, a missing one fail mid-run."""
    have, want = flat_fields(config), flat_fields(defaults.get_config())
    unknown = sorted(set(have) - set(want))
    if unknown:
        raise ConfigError(f"unknown config field{'s' * (len(unknown) > 1)} {', '.join(unknown)}: not a field of "
                          f"hpa_jax/config/defaults.py")
    missing = sorted(set(want) - set(have))
    if missing:
        raise ConfigError(f"the config lacks the field{'s' * (len(missing) > 1)} {', '.join(missing)}: build it "
                          f"from hpa_jax.config.defaults.get_config()")


def flat_fields(config, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} of every leaf field (an open subtree, `OPEN_FIELDS`, is one leaf)."""
    out = {}
    for key in config.keys():
        value, path = config[key], f"{prefix}{key}"
        if _is_section(value) and path not in OPEN_FIELDS:
            out.update(flat_fields(value, path + "."))
        else:
            out[path] = value
    return out


def divisible(field: str, batch_size: int, num_devices: int) -> None:
    """`batch_size` (named `field`) splits evenly over `num_devices` devices."""
    if batch_size % num_devices:
        raise ConfigError(f"{field}={batch_size} is not divisible by the {num_devices} devices of the mesh; "
                          f"use a multiple of {num_devices}")


# ---- the sections ---------------------------------------------------------------------------

def _check_top(c) -> None:
    _integer(c, "seed", 0)
    _integer(c, "num_classes", 1)
    _integer(c, "in_channels", 1)


def _check_data(c, needs_data: bool = False) -> None:
    from hpa_jax.data import combined, duplicates, oversample, sources  # noqa: PLC0415
    from hpa_jax.data.datasets import NO_DATA_DIR, SOURCES  # noqa: PLC0415

    _choice(c, "data.source", SOURCES)
    if needs_data and c.data.source == "kaggle" and not c.data.dir:
        raise ConfigError(NO_DATA_DIR)
    _choice(c, "data.format", sources.FORMATS)
    _choice(c, "data.yellow", sources.YELLOW_RULES)
    _choice(c, "data.depth16", sources.DEPTH16_RULES)
    _choice(c, "data.resample", sources.RESAMPLE_RULES)
    for field in ("data.dir", "data.packed", "data.duplicate_cache", "data.synthetic.cache_dir"):
        _optional_text(c, field)
    specs = _value(c, "data.sources")
    if not isinstance(specs, str) and not (_is_sequence(specs) and all(isinstance(s, str) for s in specs)):
        raise ConfigError(f"data.sources={specs!r}: expected NAME=FORMAT:IMAGES[:CSV] strings")
    combined.sources_from_config(c.data, None)   # each entry's form, unique names, image_size for several
    image_size = _integer(c, "data.image_size", 0)
    synthetic_size = _integer(c, "data.synthetic.image_size", 1)
    crop = _integer(c, "data.crop_size", 1)
    if image_size and crop > image_size:
        raise ConfigError(f"data.crop_size={crop} is larger than data.image_size={image_size}, the images it is "
                          f"cut from; use at most {image_size}")
    if not image_size and c.data.source == "synthetic" and crop > synthetic_size:
        raise ConfigError(f"data.crop_size={crop} is larger than the synthetic images (data.synthetic.image_size="
                          f"{synthetic_size}) it is cut from; use at most {synthetic_size}")
    _choice(c, "data.duplicates", duplicates.POLICIES)
    _integer(c, "data.duplicate_distance", 0, 64)
    _integer(c, "data.oversample_max_factor", 1)
    _integer(c, "data.oversample_target", 0)
    _choice(c, "data.oversample_rounding", oversample.ROUNDING)
    folds = _integer(c, "data.num_folds", 2)
    _integer(c, "data.fold", 0, folds - 1)
    if _value(c, "data.fold_seed") is not None:
        _integer(c, "data.fold_seed", 0)
    for field, sign in (("data.mean", ">="), ("data.std", ">")):
        values = _value(c, field)
        if not (_is_sequence(values) and len(values) == c.in_channels
                and all(_is_real(v) and (v > 0 if sign == ">" else v >= 0) for v in values)):
            raise ConfigError(f"{field}={values!r}: expected in_channels={c.in_channels} numbers {sign} 0, one a "
                              f"channel")
    for field, low in (("data.num_threads", 1), ("data.num_workers", 0)):   # "auto": `pipeline.readers`
        value = _value(c, field)
        if value != "auto" and not (_is_int(value) and value >= low):
            raise ConfigError(f"{field}={value!r}: expected an integer >= {low} or \"auto\" (sized to the host)")
    _integer(c, "data.prefetch", 0)
    _integer(c, "data.synthetic.num_train", 1)
    _integer(c, "data.synthetic.num_test", 0)
    _integer(c, "data.synthetic.seed", 0)
    _boolean(c, "data.synthetic.varied_cells")


def _check_model(c) -> None:
    from hpa_jax import models  # noqa: PLC0415
    from hpa_jax.models.heads import POOLS  # noqa: PLC0415
    from hpa_jax.models.layers import GROUPED_CONV_IMPLEMENTATIONS  # noqa: PLC0415

    _choice(c, "model.name", tuple(sorted(models.ENCODERS)))
    _integer(c, "model.width", 1)
    _choice(c, "model.dtype", DTYPES)
    _choice(c, "model.batch_norm_sync", models.BATCH_NORM_SYNCS)
    _choice(c, "model.grouped_conv", GROUPED_CONV_IMPLEMENTATIONS)
    _choice(c, "model.head.pool", POOLS)
    layers = _value(c, "model.head.layers")
    if not (_is_sequence(layers) and all(_is_sequence(layer) and len(layer) == 2 and _is_int(layer[0])
                                         and layer[0] >= 1 and _is_real(layer[1]) and 0 <= layer[1] < 1
                                         for layer in layers)):
        raise ConfigError(f"model.head.layers={layers!r}: expected (units >= 1, dropout in [0, 1)) pairs, e.g. "
                          f"((1024, 0.5),), or () for none")
    _boolean(c, "model.head.batch_norm")
    if not _is_section(_value(c, "model.encoder_options")):
        raise ConfigError(f"model.encoder_options={c.model.encoder_options!r}: expected a ConfigDict of keywords")
    _optional_text(c, "model.pretrained")
    models.create_model_from_config(c)   # the family's own keywords (encoder_options) fit its encoder


def _check_optim(c) -> None:
    from hpa_jax.training.optim import OPTIMIZERS, SCHEDULES  # noqa: PLC0415

    _choice(c, "optim.name", OPTIMIZERS)
    lr = _real(c, "optim.lr", 0.0)   # 0 freezes the weights (a pretrained encoder kept as loaded)
    multipliers = _value(c, "optim.group_lr_multipliers")
    if not (_is_sequence(multipliers) and multipliers and all(_is_real(m) and m >= 0 for m in multipliers)):
        raise ConfigError(f"optim.group_lr_multipliers={multipliers!r}: expected one finite number >= 0 per layer "
                          f"group (encoder first, head last), e.g. (1.0,)")
    _real(c, "optim.momentum", 0.0, 1.0, high_open=True)
    _real(c, "optim.weight_decay", 0.0)
    _real(c, "optim.l1", 0.0)
    _choice(c, "optim.schedule", SCHEDULES)
    _integer(c, "optim.cycle_epochs", 1)
    _integer(c, "optim.cycle_mult", 1)
    _real(c, "optim.min_lr", 0.0, lr)
    _integer(c, "optim.warmup_epochs", 0)


def _check_batches(c, num_devices: int | None) -> None:
    from hpa_jax.runtime.sharding import REDUCTIONS  # noqa: PLC0415

    batch = _integer(c, "train.batch_size", 1)
    _integer(c, "train.num_epochs", 1)
    _integer(c, "train.steps_per_epoch", 0)
    steps = _integer(c, "train.accumulation_steps", 1)
    _choice(c, "train.reduction", REDUCTIONS)
    eval_batch = _integer(c, "eval.batch_size", 1)
    if num_devices is None:
        if batch % steps:
            raise ConfigError(f"train.batch_size={batch} is not divisible by train.accumulation_steps={steps}; "
                              f"use a divisor of it")
        return
    divisible("train.batch_size", batch, num_devices)
    divisible("eval.batch_size", eval_batch, num_devices)
    per_device = batch // num_devices
    if per_device % steps:
        raise ConfigError(f"the per-device batch of {per_device} images (train.batch_size={batch} over {num_devices} "
                          f"devices) is not divisible by train.accumulation_steps={steps}; use a divisor of it")


def _check_loss(c) -> None:
    from hpa_jax.training.losses import PER_CLASS_LOSSES  # noqa: PLC0415

    _choice(c, "loss.name", tuple(PER_CLASS_LOSSES))
    _real(c, "loss.focal_gamma", 0.0)
    _real(c, "loss.e_alpha", 0.0, 1.0, high_open=True)
    _boolean(c, "loss.normalize_weights")
    _real(c, "loss.hard_sample_ratio", 0.0, 1.0, low_open=True)


def _check_eval(c) -> None:
    from hpa_jax.evaluation.thresholds import THRESHOLD_METHODS  # noqa: PLC0415

    _real(c, "eval.threshold", 0.0, 1.0)
    _choice(c, "eval.threshold_method", THRESHOLD_METHODS)
    _boolean(c, "eval.force_one")
    tta = _value(c, "eval.tta")
    if not (_is_sequence(tta) and tta and all(_is_int(k) and 0 <= k < D4_TRANSFORMS for k in tta)):
        raise ConfigError(f"eval.tta={tta!r}: expected D4 transform indices in 0..{D4_TRANSFORMS - 1}, e.g. (0,) "
                          f"for none or (0, 1, 2, 3, 4, 5, 6, 7) for all eight")
    which = _value(c, "eval.checkpoint")
    if not (which in NAMED_CHECKPOINTS or (_is_int(which) and which >= 0)
            or (isinstance(which, str) and which.isdigit())):
        raise ConfigError(f"eval.checkpoint={which!r}: expected 'best', 'latest', 'swa' or a step number")


def _check_checkpoint(c) -> None:
    from hpa_jax.runtime.checkpoint import BEST_METRICS  # noqa: PLC0415

    _integer(c, "checkpoint.keep", 0)
    _choice(c, "checkpoint.best_metric", tuple(BEST_METRICS))
    _integer(c, "checkpoint.every_steps", 0)


def _check_swa(c, averaging: bool) -> None:
    from hpa_jax.training.averaging import AVERAGES, how_many  # noqa: PLC0415
    from hpa_jax.training.optim import cycle_end_epochs  # noqa: PLC0415

    average = _choice(c, "swa.average", AVERAGES)
    asked = _integer(c, "swa.num_checkpoints", 0)
    if not averaging:
        return
    n, epochs, keep = how_many(c), c.train.num_epochs, c.checkpoint.keep
    if average == "last_epochs" and n == 0:
        raise ConfigError("swa.num_checkpoints=0 averages every epoch checkpoint training keeps, and "
                          "checkpoint.keep=0 keeps none; set either to the number of epochs to average")
    if average == "last_epochs" and n > epochs:
        raise ConfigError(f"swa.num_checkpoints={asked} is more than train.num_epochs={epochs}: there are only "
                          f"{epochs} epoch checkpoints to average")
    if average == "last_epochs" and n > keep:
        raise ConfigError(f"swa.num_checkpoints={asked} is more than checkpoint.keep={keep}, the epoch checkpoints "
                          f"training keeps; train with checkpoint.keep >= {asked}")
    ends = cycle_end_epochs(c.optim, epochs)
    if average == "cycle_ends" and not ends:
        raise ConfigError(f"swa.average='cycle_ends': optim.schedule={c.optim.schedule!r} ends no cycle in "
                          f"train.num_epochs={epochs} (optim.cycle_epochs={c.optim.cycle_epochs})")
    if average == "cycle_ends" and n > len(ends):
        raise ConfigError(f"swa.num_checkpoints={asked} is more than the {len(ends)} cycle end(s) of "
                          f"optim.schedule={c.optim.schedule!r} in train.num_epochs={epochs} (epochs "
                          f"{', '.join(map(str, ends))})")


def _check_lr_find(c) -> None:
    start = _real(c, "lr_find.start_lr", 0.0, low_open=True)
    if _real(c, "lr_find.end_lr", 0.0, low_open=True) <= start:
        raise ConfigError(f"lr_find.end_lr={c.lr_find.end_lr!r}: expected more than lr_find.start_lr={start:g}")
    _integer(c, "lr_find.num_steps", 1)
    _real(c, "lr_find.smoothing", 0.0, 1.0, high_open=True)
    _real(c, "lr_find.diverge_factor", 1.0, low_open=True)


def _check_plan(c) -> None:
    _integer(c, "plan.measure_batch", 1)
    _integer(c, "plan.measure_size", 0)
    _integer(c, "plan.measure_steps", 0)
    _integer(c, "plan.data_samples", 0)
    _real(c, "plan.device_memory_gb", 0.0)
    _integer(c, "plan.devices_per_node", 1)
    _real(c, "plan.node_link_gb_s", 0.0, low_open=True)
    _real(c, "plan.network_gb_s", 0.0, low_open=True)
    _real(c, "plan.collective_latency_us", 0.0)


# ---- one field ------------------------------------------------------------------------------

def _value(config, field: str):
    for key in field.split("."):
        config = config[key]
    return config


def _is_section(value) -> bool:
    return isinstance(value, (ml_collections.ConfigDict, Mapping))


def _is_sequence(value) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _choice(config, field: str, choices: Sequence[str]) -> str:
    value = _value(config, field)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{field}={value!r}: expected one of {', '.join(choices)}")
    return value


def _boolean(config, field: str) -> bool:
    value = _value(config, field)
    if not isinstance(value, bool):
        raise ConfigError(f"{field}={value!r}: expected True or False")
    return value


def _optional_text(config, field: str) -> None:
    value = _value(config, field)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{field}={value!r}: expected a path (a string) or None")


def _integer(config, field: str, low: int, high: int | None = None) -> int:
    value = _value(config, field)
    if not _is_int(value) or value < low or (high is not None and value > high):
        wanted = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ConfigError(f"{field}={value!r}: expected {wanted}")
    return int(value)


def _real(config, field: str, low: float, high: float | None = None, *, low_open: bool = False,
          high_open: bool = False) -> float:
    value = _value(config, field)
    if not _is_real(value) or value < low or (low_open and value == low) or (
            high is not None and (value > high or (high_open and value == high))):
        if high is None:
            wanted = f"a number {'>' if low_open else '>='} {low:g}"
        else:
            wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{field}={value!r}: expected {wanted}")
    return float(value)
