"""What the training loop costs on top of its jitted train step: the same host batches trained on
by the bare step and by `loop.run_epoch`, from the same state (`scripts/benchmark.py loop` and
`gpu` report it).

The bare step is the compiled program called back to back on batches already on the devices, one
wait at the end; the loop puts each host batch on the devices, dispatches the step, reads the
metrics back and checks them. A small model makes the step short, so whatever the host adds shows.
"""

import time

import jax
import numpy as np

from hpa_jax.models import create_model_from_config
from hpa_jax.runtime import sharding
from hpa_jax.training import loop, optim
from hpa_jax.training.state import create_train_state
from hpa_jax.training.step import make_train_step


def small_config(config, crop: int, batch: int, **overrides):
    """`config` at `crop` px and a global batch of `batch`, then `overrides` {"section.key": value}
    (the benchmarks pass the quickstart's config for a small model, or a paper config)."""
    config.data.crop_size, config.train.batch_size = crop, batch
    for field, value in overrides.items():
        section, key = field.split(".")
        config[section][key] = value
    return config


def host_batches(config, steps: int, seed: int = 0) -> list[dict]:
    """`steps` training batches as the input pipeline yields them (uint8 NHWC, labels, D4 codes)."""
    rng = np.random.default_rng(seed)
    b, s = config.train.batch_size, config.data.crop_size
    return [{"image": rng.integers(0, 256, (b, s, s, config.in_channels), dtype=np.uint8),
             "labels": (rng.random((b, config.num_classes)) < 0.1).astype(np.float32),
             "d4": rng.integers(0, 8, b, dtype=np.int32)} for _ in range(steps)]


class _Bar(list):
    """What `run_epoch` needs of its progress bar: iteration and a silent `set_postfix`."""

    def set_postfix(self, **_):
        pass


def loop_overhead(config, steps: int, repeats: int = 3) -> dict:
    """{"bare", "loop"} images/s on the same batches from the same state, and the loop's overhead."""
    mesh = sharding.make_mesh()
    model = create_model_from_config(config)
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=steps, num_epochs=1)
    tx = optim.optimizer_from_config(config, schedule)
    state = create_train_state(model, tx, jax.random.key(0), image_size=config.data.crop_size,
                               in_channels=config.in_channels)
    state = jax.device_put(state, sharding.replicated(mesh))
    train_step = make_train_step(config, mesh)
    batches = host_batches(config, steps)
    rng = jax.random.key(1)

    def fresh():   # the step donates its state: each pass starts from its own copy
        return jax.block_until_ready(jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state))

    def bare():
        placed = [sharding.put_batch(mesh, b) for b in batches]
        s = jax.block_until_ready(fresh())
        jax.block_until_ready(placed)
        start = time.perf_counter()
        for i, b in enumerate(placed):
            s, _ = train_step(s, b["image"], b["labels"], jax.random.fold_in(rng, i), b["d4"])
        jax.block_until_ready(s)
        return time.perf_counter() - start

    def looped():
        s = fresh()
        start = time.perf_counter()
        s, _ = loop.run_epoch(train_step, s, _Bar(batches), mesh, rng, schedule)
        jax.block_until_ready(s)
        return time.perf_counter() - start

    bare()   # compile and warm up
    images = steps * config.train.batch_size
    rates = {"bare": 0.0, "loop": 0.0}
    for _ in range(repeats):
        for name, run in (("bare", bare), ("loop", looped)):
            rates[name] = max(rates[name], images / run())
    return {**rates, "overhead": 1 - rates["loop"] / rates["bare"]}
