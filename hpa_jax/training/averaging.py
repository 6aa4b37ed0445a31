"""`--mode=swa`, checkpoint averaging: the uniform mean of a run's last N epoch-end (or
warm-restart cycle-end) checkpoints, BatchNorm's statistics recomputed for the averaged weights by
one pass over the training images, saved where `eval.checkpoint=swa` finds it
(`Workdir.averaged_checkpoint`): evaluate, predict, `hpa_jax.predict` and whatever restores through
`inference.restore_variables` use it.

A mode over the checkpoints training keeps rather than a running mean inside training: those
checkpoints are the average's inputs already (`checkpoint.keep` >= N, checked at start-up), so the
train state, the train step and training's bit-exact resume are untouched, and any N or choice can
be averaged after the fact. Averaged weights have no statistics of their own (the checkpoints'
running statistics describe other weights), so they are recomputed as PyTorch's
`swa_utils.update_bn` does (momentum None): every training batch's moments, as training's forward
computes them (train mode, over the whole global batch), weighted equally.
"""

import json
import shutil

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from hpa_jax.collectives import MESH_AXIS, ordered_sum
from hpa_jax.data import pipeline
from hpa_jax.data.datasets import load_dataset
from hpa_jax.errors import CheckpointError, ConfigError, DataError, file_errors
from hpa_jax.evaluation import inference
from hpa_jax.models import create_model_from_config
from hpa_jax.models.layers import BATCH_NORM_DEFAULTS
from hpa_jax.reporting import outputs
from hpa_jax.runtime import checkpoint, distributed, sharding
from hpa_jax.training import optim
from hpa_jax.training.loop import DEVICE_PREFETCH, oversampled_rows
from hpa_jax.workdir import Workdir

AVERAGES = ("last_epochs", "cycle_ends")   # swa.average
BATCH_NORM_RNG = 2   # the BatchNorm pass's dropout key, folded into the seed's (training uses 0 and 1)


def how_many(config) -> int:
    """N, the checkpoints averaged: `swa.num_checkpoints`, or for 0 every one training keeps (the
    last `checkpoint.keep` epochs of `train.num_epochs`, or every cycle end)."""
    if config.swa.num_checkpoints:
        return int(config.swa.num_checkpoints)
    if config.swa.average == "last_epochs":
        return min(int(config.checkpoint.keep), int(config.train.num_epochs))
    return len(optim.cycle_end_epochs(config.optim, config.train.num_epochs))


def epoch_records(run: Workdir) -> list[dict]:
    """The run's epochs as training recorded them (`metrics.jsonl`: epoch, step, cycle_end), in order."""
    if not run.metrics.is_file():
        raise CheckpointError(f"{run.metrics}: not found; train first (--mode=train)")
    with file_errors(run.metrics):
        records = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    return sorted({r["epoch"]: r for r in records}.values(), key=lambda r: r["epoch"])


def averaged_epochs(records: list[dict], average: str, n: int) -> list[dict]:
    """The records of the epochs to average: the last `n` epochs, or the last `n` cycle ends."""
    chosen = records if average == "last_epochs" else [r for r in records if r.get("cycle_end")]
    if len(chosen) < n:
        what = "epochs" if average == "last_epochs" else "cycle ends"
        raise ConfigError(f"swa.average={average!r} of {n} checkpoints (swa.num_checkpoints): the run has "
                          f"{len(chosen)} {what} trained; average at most {len(chosen)}, or train on")
    return chosen[-n:]


def average_checkpoints(manager, steps: list[int], target: dict) -> dict:
    """The uniform mean of the checkpoints at `steps` (their params and BatchNorm statistics, as
    `target`: shapes, dtypes, shardings), summed in step order on the devices, then divided."""
    add = jax.jit(lambda total, x: jax.tree.map(jnp.add, total, x), donate_argnums=0)
    total = None
    for step in tqdm(steps, desc="swa: averaging", unit="checkpoint", dynamic_ncols=True, leave=False,
                     disable=not distributed.is_primary()):
        _, variables, _ = checkpoint.restore_readable(manager, step, target, with_progress=False)
        total = variables if total is None else add(total, variables)
    return jax.tree.map(lambda x: x / len(steps), total)


def make_batch_stats_step(model, config, mesh):
    """jit(shard_map(...)): (total, variables, uint8 crops, D4 codes, rng) -> `total` plus this
    global batch's BatchNorm moments, every layer's, as the train step's forward takes them (train
    mode with dropout; the moments of the whole batch, or each device's averaged over the devices
    for `model.batch_norm_sync="device"`, as `step.make_train_step` averages their running ones).

    The model's layers only hand out running statistics: started from zeros, one update leaves
    (1 - momentum) times the batch's moments, divided out here."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    share = 1 - BATCH_NORM_DEFAULTS["momentum"]     # the batch's share in a running statistic's update
    reduction = sharding.resolve_reduction(config.train.reduction, mesh.devices.flat[0].platform)
    per_device, devices = config.model.batch_norm_sync == "device", mesh.shape[MESH_AXIS]

    def moments(variables, images, rng):
        rng = jax.random.fold_in(rng, jax.lax.axis_index(MESH_AXIS))
        zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
        _, updates = model.apply({"params": variables["params"], "batch_stats": zeros},
                                 pipeline.normalize(images, mean, std), train=True, rngs={"dropout": rng},
                                 mutable=["batch_stats"])
        batch = jax.tree.map(lambda s: s / share, updates["batch_stats"])
        if per_device:
            batch = jax.tree.map(lambda s: s / devices, ordered_sum(batch, MESH_AXIS, reduction))
        return batch

    sharded = jax.shard_map(moments, mesh=mesh, in_specs=(P(), P(MESH_AXIS), P()), out_specs=P(), check_vma=False)

    def step(total, variables, images, d4, rng):
        return jax.tree.map(jnp.add, total, sharded(variables, pipeline.dihedral(images, d4), rng))

    return distributed.Together(jax.jit(step, donate_argnums=0), "BatchNorm statistics step")


def recompute_batch_stats(model, config, mesh, variables: dict, source, *, epoch: int) -> tuple[dict, int]:
    """(BatchNorm statistics for `variables`' params, batches): the equal-weight mean of every
    batch's moments over one epoch of training batches (`pipeline.train_batches_from_config` of
    `epoch`: training's crops, D4 transforms and order, `train.steps_per_epoch` of them if set)."""
    count = pipeline.steps_per_epoch(len(source), config.train.batch_size, config.train.steps_per_epoch)
    if count == 0:
        raise DataError(f"{len(source)} training images are fewer than one batch of {config.train.batch_size}")
    step = make_batch_stats_step(model, config, mesh)
    rng = jax.random.fold_in(jax.random.key(config.seed), BATCH_NORM_RNG)
    total = jax.device_put(jax.tree.map(jnp.zeros_like, variables["batch_stats"]), sharding.replicated(mesh))
    batches = pipeline.train_batches_from_config(config, source, epoch=epoch)
    done = 0
    try:
        bar = tqdm(batches, total=count, desc="swa: BatchNorm statistics", unit="batch", dynamic_ncols=True,
                   disable=not distributed.is_primary())
        for arrays in sharding.prefetch_to_devices(bar, mesh, DEVICE_PREFETCH, keys=("image", "d4")):
            total = step(total, variables, arrays["image"], arrays["d4"], jax.random.fold_in(rng, done))
            done += 1
        bar.close()
    finally:
        batches.close()
    return jax.tree.map(lambda s: s / done, total), done


def save_averaged(workdir, step: int, variables: dict) -> None:
    """Replaces the run's averaged checkpoint (a rerun with other settings overwrites it) with
    `variables` at `step`, the newest step averaged."""
    run = Workdir(workdir)
    if distributed.is_primary():
        run.averaged_record.unlink(missing_ok=True)
        shutil.rmtree(run.averaged_checkpoint, ignore_errors=True)
    distributed.barrier("swa: the previous average removed")
    manager = checkpoint.checkpoint_manager(workdir, averaged=True, writer=True)
    checkpoint.save(manager, step, {name: tree for name, tree in variables.items() if tree}, None)
    checkpoint.wait(manager)


def average(config, workdir) -> dict:
    """`--mode=swa`: averages the checkpoints `swa.average` and `swa.num_checkpoints` name,
    recomputes the BatchNorm statistics (families without BatchNorm skip it) and saves the result
    for `eval.checkpoint=swa`; writes `swa.json` and returns its record. `config` is the run's
    (`config.upgrade.training_config`, which `hpa_jax.main` applies)."""
    run = Workdir(workdir)
    n = how_many(config)
    epochs = averaged_epochs(epoch_records(run), config.swa.average, n)
    steps = [int(r["step"]) for r in epochs]
    manager = checkpoint.checkpoint_manager(workdir, must_exist=True)
    missing = [r for r in epochs if r["step"] not in manager.all_steps()]
    if missing:
        kept = ", ".join(map(str, sorted(manager.all_steps()))) or "none"
        epochs_missing, steps_missing = (", ".join(str(r[key]) for r in missing) for key in ("epoch", "step"))
        raise CheckpointError(f"{manager.directory}: no checkpoint of epoch(s) {epochs_missing} (steps {steps_missing}), "
                              f"which the average of {n} (swa.num_checkpoints) needs; training kept steps {kept}: "
                              f"train with checkpoint.keep >= {n}")
    model = create_model_from_config(config)
    mesh = sharding.make_mesh()
    variables = average_checkpoints(manager, steps, inference.variables_target(model, config, mesh))
    batches = 0
    if "batch_stats" in variables:
        dataset = distributed.primary_first(load_dataset, config)
        train_idx, _ = dataset.split(config.data.fold)
        source = dataset.train_source(oversampled_rows(config, dataset.train_labels, train_idx), config.data)
        variables["batch_stats"], batches = recompute_batch_stats(model, config, mesh, variables, source,
                                                                  epoch=epochs[-1]["epoch"])
    save_averaged(workdir, steps[-1], variables)
    record = {"average": config.swa.average, "epochs": [r["epoch"] for r in epochs], "steps": steps,
              "step": steps[-1], "batch_norm_batches": batches}
    outputs.write_json(run.averaged_record, record)
    statistics = (f"BatchNorm statistics recomputed over {batches} training batches" if batches else
                  "no BatchNorm to recompute")
    print(f"swa: averaged the checkpoints of epochs {', '.join(map(str, record['epochs']))} (steps "
          f"{', '.join(map(str, steps))}); {statistics} -> {run.averaged_checkpoint} (eval.checkpoint=swa)")
    return record
