"""The training loop: epochs of the train step (`step.make_train_step`) over this process's share
of every global batch, validation and a checkpoint after each epoch, mid-epoch checkpoints,
resuming, and stopping cleanly on SIGTERM or Ctrl-C.
"""

import contextlib
import dataclasses
import itertools
import json
import pathlib
import signal
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data import oversample, pipeline
from hpa_jax.data.datasets import fold_seed, load_dataset
from hpa_jax.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from hpa_jax.evaluation import inference, metrics, validation
from hpa_jax.models import create_model_from_config
from hpa_jax.reporting import outputs, plots
from hpa_jax.reporting.summaries import Summaries
from hpa_jax.runtime import checkpoint, distributed, preemption, sharding
from hpa_jax.training import optim
from hpa_jax.training.state import TrainState, create_train_state
from hpa_jax.training.step import class_weights_for, make_train_step
from hpa_jax.workdir import Workdir


DEVICE_PREFETCH = 2   # batches on the devices ahead of the step's


def run_epoch(train_step, state: TrainState, bar: tqdm, mesh, dropout_rng, schedule, check_every: int = 10, *,
              losses_before=(), checkpoint_every: int = 0, save_checkpoint=None, should_stop=None, on_loss=None):
    """Runs the train step over the batches of the progress `bar`; returns the new state and the
    mean loss of the epoch's steps.

    The host never waits on the step it has just dispatched: the next batches are put on the
    devices while it runs (`sharding.prefetch_to_devices`), and the metrics are read back every
    `check_every` steps up to the step before the newest, which keeps the device's queue full; a
    non-finite step found then raises `TrainingDiverged` naming it.

    Mid-epoch checkpoints: after every global step that is a multiple of `checkpoint_every`,
    `save_checkpoint(state, step, losses)` is called with the losses of all the epoch's steps so
    far. The pending steps are checked first, so a diverged state is never saved and the losses
    are complete; a run resumed from that checkpoint passes them back as `losses_before`, so its
    epoch mean is the uninterrupted run's.

    `should_stop(step)` is asked after every step (and any checkpoint of it); True checks the
    pending steps and raises `preemption.StopRequested` with the state, step and losses so far.
    `on_loss(step, loss)` gets each step's loss as it is read back (TensorBoard).
    """
    step = int(state.step)
    pending, losses_seen = [], [float(loss) for loss in losses_before]

    def check(behind: int = 0):
        """Reads the pending steps' metrics back but the newest `behind` (still running)."""
        ready = pending[:len(pending) - behind]
        host = jax.tree.map(sharding.replicated_to_host, ready)
        for s, metrics in host:
            if not metrics["finite"]:
                raise TrainingDiverged(f"non-finite loss or gradient at step {s + 1} (loss {metrics['loss']}, "
                                       f"gradient norm {metrics['grad_norm']})")
            losses_seen.append(float(metrics["loss"]))
            if on_loss is not None:
                on_loss(s + 1, losses_seen[-1])
        del pending[:len(ready)]
        if losses_seen:
            bar.set_postfix(loss=f"{losses_seen[-1]:.4f}", lr=f"{float(schedule(step - 1)):.2e}")

    for arrays in sharding.prefetch_to_devices(bar, mesh, DEVICE_PREFETCH, keys=("image", "labels", "d4")):
        state, metrics = train_step(state, arrays["image"], arrays["labels"], jax.random.fold_in(dropout_rng, step),
                                    arrays.get("d4"))
        pending.append((step, metrics))
        step += 1
        if len(pending) > check_every:
            check(behind=1)
        if save_checkpoint is not None and checkpoint_every > 0 and step % checkpoint_every == 0:
            check()
            save_checkpoint(state, step, list(losses_seen))
        if should_stop is not None and should_stop(step):
            check()
            raise preemption.StopRequested(state, step, list(losses_seen))
    check()
    return state, float(np.mean(losses_seen)) if losses_seen else float("nan")


def oversampled_rows(config, labels: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """The training rows, minority samples repeated (`data.oversample_*`; the validation fold is
    never touched). E-loss weights and the label-prior baseline keep the unique images' counts."""
    if config.data.oversample_max_factor <= 1:
        return train_idx
    local = oversample.oversample_indices(labels[train_idx], max_factor=config.data.oversample_max_factor,
                                          target_count=config.data.oversample_target or None,
                                          rounding=config.data.oversample_rounding, seed=config.seed)
    print(oversample.summary(labels[train_idx], local, CLASS_NAMES))
    return train_idx[local]


def check_progress(progress: dict | None, step: int, steps_per_epoch: int) -> None:
    """A mid-epoch checkpoint's record must place its step where the current config does; with
    another batch size or training set, its batch position would point at other batches."""
    if progress is not None and progress["epoch"] * steps_per_epoch + progress["batches_done"] != step:
        raise ConfigError(f"the checkpoint at step {step} was taken {progress['batches_done']} batches into epoch "
                          f"{progress['epoch'] + 1}, which does not fit {steps_per_epoch} steps per epoch: resume with "
                          f"the data and batch settings it was trained with")


def open_run_batches(config, source, epoch: int, progress: dict | None):
    """This process's share of the batches of epochs `epoch` .. `train.num_epochs` - 1, in one
    iterator (its reader processes live for the whole run), from where `progress` left the first
    when it resumes from a mid-epoch checkpoint. The global order is a pure function of (seed,
    epoch), so the global batch count done is all a resume needs: the same with another number
    of processes or reader workers than the checkpoint was saved with."""
    return pipeline.train_batches_from_config(config, source, epoch=epoch,
                                              start_batch=progress["batches_done"] if progress else 0,
                                              num_epochs=config.train.num_epochs - epoch)


def keep_metrics_up_to(path: pathlib.Path, step: int) -> None:
    """Drops the `metrics.jsonl` records of epochs after `step`, where a run resumes: their
    checkpoints are gone (a save killed after the record was written, or a checkpoint set aside
    as unreadable), and the resumed run writes them again. A line cut short by a kill goes too."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def before(line):
        try:
            return line.endswith("\n") and json.loads(line)["step"] <= step
        except ValueError:
            return False

    kept = [line for line in lines if before(line)]
    if kept != lines:
        outputs.write_text(path, "".join(kept))


def train_and_evaluate(config, workdir) -> dict:
    """Trains `config.train.num_epochs` epochs on the training folds, validating and saving a
    checkpoint after each; resumes from the newest readable checkpoint in `workdir` if there is one.
    SIGTERM or Ctrl-C stops it after the current step with a checkpoint to resume from
    (`TrainingInterrupted`); an epoch's last step finishes its validation and checkpoint first.
    `config` is validated for the devices (`hpa_jax.config.validate.validate`, as `hpa_jax.main` does)."""
    run = Workdir(workdir)
    run.path.mkdir(parents=True, exist_ok=True)
    dataset = distributed.primary_first(load_dataset, config)
    train_idx, val_idx = dataset.split(config.data.fold)
    outputs.write_json(run.config, json.loads(config.to_json_best_effort()))
    outputs.write_text(run.folds, "Id,fold,source\n" + "".join(
        f"{i},{f},{n}\n" for i, f, n in zip(dataset.train_ids, dataset.folds, dataset.train_source_names)))

    mesh = sharding.make_mesh()
    train_rows = oversampled_rows(config, dataset.train_labels, train_idx)
    steps_per_epoch = pipeline.steps_per_epoch(len(train_rows), config.train.batch_size,
                                               config.train.steps_per_epoch)
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(train_idx)} training images are fewer than one batch of {config.train.batch_size}")
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=steps_per_epoch,
                                            num_epochs=config.train.num_epochs)

    model = create_model_from_config(config)
    tx = optim.optimizer_from_config(config, schedule)
    rng = jax.random.key(config.seed)
    state = create_train_state(model, tx, jax.random.fold_in(rng, 0), image_size=config.data.crop_size,
                               in_channels=config.in_channels, pretrained=config.model.pretrained,
                               model_name=config.model.name)
    state = jax.device_put(state, sharding.replicated(mesh))
    cycle_end_steps = [e * steps_per_epoch for e in optim.cycle_end_epochs(config.optim, config.train.num_epochs)]
    manager = checkpoint.checkpoint_manager(workdir, config.checkpoint.keep, keep_steps=cycle_end_steps, writer=True)
    progress = None   # set when resuming from a mid-epoch checkpoint: where in its epoch it was taken
    if manager.latest_step() is not None:
        _, state, progress = checkpoint.restore_readable(manager, "latest", state)
        check_progress(progress, int(state.step), steps_per_epoch)
        where = f" (epoch {progress['epoch'] + 1}, batch {progress['batches_done']})" if progress else ""
        print(f"resumed from {manager.directory} at step {int(state.step)}{where}")
    keep_metrics_up_to(run.metrics, int(state.step))
    train_step = make_train_step(config, mesh, class_weights_for(config, dataset.train_labels[train_idx]))
    predict_step = inference.make_predict_step(model, config, mesh)
    dropout_rng = jax.random.fold_in(rng, 1)

    train_source = dataset.train_source(train_rows, config.data)
    val_source = dataset.train_source(val_idx, config.data)
    every_steps = int(config.checkpoint.every_steps)
    loop = Loop(train_step=train_step, predict_step=predict_step, mesh=mesh, dropout_rng=dropout_rng,
                schedule=schedule, train_source=train_source, val_source=val_source,
                steps_per_epoch=steps_per_epoch, cycle_end_steps=tuple(cycle_end_steps), every_steps=every_steps)
    with preemption.StopOnSignal(manager.reached_preemption) as stop, \
            Summaries(workdir, config, schedule, start_step=int(state.step)) as tensorboard:
        record = run_epochs(config, workdir, loop, state, progress, manager, stop, tensorboard)
    if record:
        plots.plot_training_curves(run.metrics, run.training_curves)

    baseline = metrics.label_prior_baseline(dataset.train_labels[train_idx], val_source.labels, seed=config.seed)
    if record:
        print(f"validation macro-F1 at threshold {config.eval.threshold}: {record['val_macro_f1']:.4f}  "
              f"(label-prior baseline {baseline:.4f})")
    return {**record, "label_prior_macro_f1": baseline}


@dataclasses.dataclass(frozen=True)
class Loop:
    """What the epochs of one run share: the compiled steps, the data and the step counts."""
    train_step: Any
    predict_step: Any
    mesh: Any
    dropout_rng: Any
    schedule: Any
    train_source: Any
    val_source: Any
    steps_per_epoch: int
    cycle_end_steps: tuple
    every_steps: int


def run_epochs(config, workdir, loop: Loop, state, progress, manager, stop,
               tensorboard: Summaries | None = None) -> dict:
    """The epochs from where `state` (and a mid-epoch `progress`) left off, checkpointing to
    `manager` and stopping when `stop` (a `preemption.StopOnSignal`) says so; returns the last
    epoch's metrics record. `tensorboard` also gets every step's loss and every record."""
    steps_per_epoch = loop.steps_per_epoch
    first = int(state.step) // steps_per_epoch
    if first >= config.train.num_epochs:
        checkpoint.wait(manager)
        return {}
    resumed = progress if progress is not None and progress["epoch"] == first else None
    with contextlib.closing(open_run_batches(config, loop.train_source, first, resumed)) as batches, \
            contextlib.closing(inference.open_eval_batches(config, loop.val_source,
                                                           num_passes=config.train.num_epochs - first)) as val_batches:
        return _run_epochs(config, workdir, loop, state, resumed, batches, val_batches, manager, stop, tensorboard)


def _run_epochs(config, workdir, loop: Loop, state, resumed, batches, val_batches, manager, stop,
                tensorboard) -> dict:
    """`run_epochs` over the run's one iterator of training batches, each epoch taking its batches
    from it, and one of validation batches, each validation a pass of it (one set of reader
    processes for the run, not one per epoch)."""
    steps_per_epoch, cycle_end_steps = loop.steps_per_epoch, loop.cycle_end_steps
    record = {}
    for epoch in range(int(state.step) // steps_per_epoch, config.train.num_epochs):
        start = time.time()
        resumed = resumed if resumed is not None and resumed["epoch"] == epoch else None
        done = resumed["batches_done"] if resumed else 0
        bar = tqdm(itertools.islice(batches, steps_per_epoch - done), total=steps_per_epoch, initial=done,
                   desc=f"epoch {epoch + 1}/{config.train.num_epochs}", unit="batch", dynamic_ncols=True,
                   disable=not distributed.is_primary())

        def save_mid_epoch(state, step, losses, epoch=epoch):
            if step % steps_per_epoch == 0:
                return    # the epoch end: its checkpoint, with validation metrics, follows
            checkpoint.save(manager, step, state, None, progress={
                "epoch": epoch, "batches_done": step - epoch * steps_per_epoch, "process_count": jax.process_count(),
                "train_losses": losses})

        def should_stop(step):   # an epoch's last step stops after its validation and checkpoint
            return stop.should_stop(step) and step % steps_per_epoch != 0

        try:
            state, train_loss = run_epoch(loop.train_step, state, bar, loop.mesh, loop.dropout_rng, loop.schedule,
                                          losses_before=resumed["train_losses"] if resumed else (),
                                          checkpoint_every=loop.every_steps, save_checkpoint=save_mid_epoch,
                                          should_stop=should_stop,
                                          on_loss=tensorboard.train_step if tensorboard else None)
        except TrainingDiverged as e:
            raise TrainingDiverged(f"{e} (epoch {epoch + 1}); nothing after it was saved, {last_good(manager)}") from None
        except preemption.StopRequested as stopped:
            if manager.latest_step() != stopped.step:
                save_mid_epoch(stopped.state, stopped.step, stopped.losses)
            checkpoint.wait(manager)
            raise TrainingInterrupted(
                f"stopped by {signal_name(stop.signum)} at step {stopped.step} (epoch {epoch + 1}, batch "
                f"{stopped.step - epoch * steps_per_epoch} of {steps_per_epoch}); saved "
                f"{manager.directory / str(stopped.step)}: run the same command to resume", stop.signum) from None
        finally:
            bar.close()
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        probs = inference.predict_probs(loop.predict_step, variables, loop.mesh, config, loop.val_source,
                                        desc="validate", batches=val_batches)
        record = {"epoch": epoch + 1, "step": int(state.step), "cycle_end": int(state.step) in cycle_end_steps,
                  "lr": float(loop.schedule(int(state.step) - 1)),
                  "train_loss": train_loss, "epoch_seconds": round(time.time() - start, 2),
                  **validation.score(loop.val_source.labels, probs, config.eval.threshold),
                  **validation.fitted_scores(loop.val_source.labels, probs, config.eval.threshold_method,
                                            fold_seed(config))[1]}
        if distributed.is_primary():
            with open(Workdir(workdir).metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        if tensorboard:
            tensorboard.epoch(record)
        print(f"epoch {epoch + 1}: train_loss {train_loss:.4f}  val_loss {record['val_loss']:.4f}  "
              f"val_macro_f1 {record['val_macro_f1']:.4f} (fitted thresholds: {record['val_macro_f1_fitted']:.4f} "
              f"in-sample, {record['val_macro_f1_cross_fitted']:.4f} cross-fitted)")
        checkpoint.save(manager, int(state.step), state,
                        checkpoint.epoch_metrics(record, config.checkpoint.best_metric))
        if stop.signum is not None and epoch + 1 < config.train.num_epochs:
            checkpoint.wait(manager)
            raise TrainingInterrupted(f"stopped by {signal_name(stop.signum)} at the end of epoch {epoch + 1} (step "
                                      f"{int(state.step)}); saved {manager.directory / str(int(state.step))}: run the "
                                      f"same command to resume", stop.signum)
    checkpoint.wait(manager)
    return record


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def last_good(manager) -> str:
    """Where a diverged run can go back to (the newest complete save)."""
    checkpoint.wait(manager)
    step = manager.latest_step()
    if step is None:
        return f"and no checkpoint was written yet in {manager.directory}"
    return f"the last good checkpoint is step {step} in {manager.directory / str(step)}"
