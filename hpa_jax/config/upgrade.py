"""A run's saved `config.json`, from any version of the package, brought up to today's fields.

The one place that knows older configs: a field added since the run was trained takes today's
default (`defaults.get_config()`), a field since removed (such as `metric`) is dropped, and the
run's own values are kept, JSON's lists turned back into the tuples the defaults hold. The code
that reads a config then reads every field as an attribute, with no defaults of its own.
"""

import json
import pathlib
from collections.abc import Mapping

import ml_collections

from hpa_jax.config import defaults
from hpa_jax.config.validate import OPEN_FIELDS, validate
from hpa_jax.errors import ConfigError, file_errors
from hpa_jax.workdir import Workdir


def upgrade(saved: Mapping) -> ml_collections.ConfigDict:
    """`saved` (a config as `config.json` holds it) with today's fields: missing ones at today's
    defaults, unknown ones dropped."""
    if not isinstance(saved, Mapping):
        raise ConfigError(f"expected a config (a JSON object of sections), got {type(saved).__name__}")
    return ml_collections.ConfigDict(_merge(defaults.get_config().to_dict(), saved, ""))


def read(path) -> ml_collections.ConfigDict:
    """The config saved at `path` (a run's `config.json`), upgraded and validated; a file that
    cannot be read or a value that cannot work is one line naming the file."""
    path = pathlib.Path(path)
    with file_errors(path):
        saved = json.loads(path.read_text())
    try:
        config = upgrade(saved)
        validate(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def training_config(config, workdir) -> ml_collections.ConfigDict:
    """The model, optimiser (its state is in the checkpoint), input-normalisation and checkpoint
    settings (which checkpoints training kept, for `--mode=swa`) are those the checkpoint was
    trained with (read from `{workdir}/config.json`), whatever the command line says; the rest is
    as given, `model.grouped_conv` too (it changes how grouped convolutions are computed, not the
    model: a run trained on CPUs predicts with "xla" on GPUs).
    The saved config, from whichever version of the package wrote it, is upgraded to today's
    fields and validated (`read`). `hpa_jax.main` gives evaluate and predict this config."""
    saved_path = Workdir(workdir).config
    if not saved_path.is_file():
        return config
    saved = read(saved_path)
    config = ml_collections.ConfigDict(config.to_dict())
    saved.model.grouped_conv = config.model.grouped_conv   # how to compute, not what: the command line's
    config.model, config.optim, config.checkpoint = saved.model, saved.optim, saved.checkpoint
    for key in ("mean", "std", "image_size", "crop_size"):
        config.data[key] = saved.data[key]
    return config


def _merge(today: dict, saved: Mapping, prefix: str) -> dict:
    out = dict(today)
    for key, value in saved.items():
        if key not in today:
            continue                                    # a field since removed
        path = f"{prefix}{key}"
        if isinstance(today[key], dict) and path not in OPEN_FIELDS:
            out[key] = _merge(today[key], value, path + ".") if isinstance(value, Mapping) else value
        else:
            out[key] = _as_tuples(value) if isinstance(today[key], tuple) else value
    return out


def _as_tuples(value):
    """JSON's nested lists back to the nested tuples of the defaults (`model.head.layers`)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value
