"""A config's batches fitted to the devices it runs on, before the one check (`validate`).

The paper's batches (74 for ResNet50, 80 for SE-ResNeXt50) were chosen for its GPUs, not for a
device count: 74 splits over 1 and 2 devices, not over 4, 8 or 16. Rather than stop, the training
batch is rounded to the nearest multiple of devices x accumulation steps (at least one image a
device) and one line says so. The learning rate stays as configured: the paper's LRs are the
ones tuned, and the rounding moves the batch by less than half a device's share (74 -> 72 on 8
devices, 80 on 16), where linear LR scaling would change the LR by as little. The evaluation
batch, which changes no result, is rounded up to a multiple of the devices.
"""

import copy
import numbers

from hpa_jax.errors import warn


def nearest_multiple(value: int, multiple: int) -> int:
    """The multiple of `multiple` nearest `value` (a tie goes up), at least `multiple`."""
    return max(multiple, (2 * value + multiple) // (2 * multiple) * multiple)


def fit_to_devices(config, num_devices: int, *, say=warn):
    """A copy of `config` whose batches split over `num_devices` devices (`say` gets one line per
    batch changed); a config that already fits comes back unchanged. Fields of the wrong type are
    left for `validate` to name."""
    train, steps, evaluation = config.train.batch_size, config.train.accumulation_steps, config.eval.batch_size
    if not all(isinstance(v, numbers.Integral) and v >= 1 for v in (train, steps, evaluation, num_devices)):
        return config
    multiple = num_devices * steps
    fitted_train = train if train % multiple == 0 else nearest_multiple(train, multiple)
    fitted_eval = -(-evaluation // num_devices) * num_devices
    if (fitted_train, fitted_eval) == (train, evaluation):
        return config
    config = copy.deepcopy(config)
    if fitted_train != train:
        share = f"{fitted_train // num_devices} a device" + (f" in {steps} micro-batches" if steps > 1 else "")
        say(f"train.batch_size={train} does not split over {num_devices} devices"
            + (f" x {steps} accumulation steps" if steps > 1 else "")
            + f": training with {fitted_train} ({share}), the learning rate as configured "
              f"({(fitted_train - train) / train:+.1%} images a step)")
        config.train.batch_size = fitted_train
    if fitted_eval != evaluation:
        say(f"eval.batch_size={evaluation} does not split over {num_devices} devices: evaluating with {fitted_eval}")
        config.eval.batch_size = fitted_eval
    return config
