"""orbax checkpoints in `{workdir}/checkpoints`: the last N epochs, the best by validation
macro-F1 and the end of every warm-restart cycle (snapshots to ensemble), each epoch's saved with
its validation metrics; plus, with `checkpoint.every_steps`, the latest mid-epoch checkpoint.

A checkpoint's items: `default`, the train state (the name an unnamed single-item orbax
checkpoint uses, so checkpoints written before there were other items restore the same way), and
for mid-epoch checkpoints `progress`, a JSON record of where in the epoch it was taken (epoch,
batches done, the grain iterator's state, the epoch's losses so far). Epoch-end checkpoints have
no `progress`: the next epoch starts from its beginning, which is a pure function of (seed, epoch).
"""

import dataclasses
import logging
import pathlib

import jax
import orbax.checkpoint as ocp

from hpa_jax.errors import CheckpointError

BEST_METRIC = "val_macro_f1"
STATE_ITEM = "default"
PROGRESS_ITEM = "progress"


def _not_the_missing_metrics_warning(record: logging.LogRecord) -> bool:
    """orbax warns at every save without metrics when a best metric is tracked; mid-epoch
    checkpoints have none by design, so the warning would only be noise every N steps."""
    return not str(record.msg).startswith("Requested `tracked_metric`; did not provide metrics")


logging.getLogger("absl").addFilter(_not_the_missing_metrics_warning)


@dataclasses.dataclass
class LatestEpochsAndResumePoint:
    """orbax preservation policy: the last `n` epoch-end checkpoints (those saved with metrics) and
    the newest checkpoint whatever it is. Counting mid-epoch checkpoints in a plain LatestN would
    let frequent mid-epoch saves push the last epochs out; and a mid-epoch checkpoint is only
    worth keeping while it is the newest, as resuming always starts from the newest."""

    n: int

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        del context
        epoch_ends = [i for i, info in enumerate(checkpoints) if info.metrics is not None]
        keep = set(epoch_ends[len(epoch_ends) - self.n:]) if self.n > 0 else set()
        keep.update([len(checkpoints) - 1] if checkpoints else [])
        return [i in keep for i in range(len(checkpoints))]


def checkpoint_manager(workdir, keep: int = 3, *, keep_steps=(), must_exist: bool = False) -> ocp.CheckpointManager:
    """`keep_steps` are kept whatever else happens (cycle ends); `must_exist` (for
    evaluate/predict) turns a missing folder into a one-line error. Mid-epoch checkpoints have no
    metrics: BestN ignores them (`keep_checkpoints_without_metrics=False`, or it would keep every
    one of them forever), so only `LatestEpochsAndResumePoint` decides about them."""
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    if must_exist and not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoint found; train first (--mode=train)")
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        LatestEpochsAndResumePoint(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                                      keep_checkpoints_without_metrics=False),
        ocp.checkpoint_managers.CustomSteps(steps=list(keep_steps)),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=lambda metrics: metrics[BEST_METRIC],
                                           best_mode="max")
    # Named handlers put the manager in multi-item mode up front; left to orbax, the mode would be
    # guessed from the first step restored and a later save with the other item would be refused.
    handlers = {STATE_ITEM: ocp.StandardCheckpointHandler(), PROGRESS_ITEM: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state, metrics: dict | None, progress: dict | None = None) -> None:
    """An epoch end's checkpoint has `metrics` (validation) and no `progress`; a mid-epoch one the
    reverse. `progress` must be JSON-serialisable and not mutated afterwards (saving is async)."""
    items = {STATE_ITEM: ocp.args.StandardSave(state)}
    if progress is not None:
        items[PROGRESS_ITEM] = ocp.args.JsonSave(progress)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def resolve_step(manager: ocp.CheckpointManager, which) -> int:
    """'best', 'latest' or a step number -> an existing step, or a one-line error."""
    steps = manager.all_steps()
    directory = manager.directory
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoint found; train first (--mode=train)")
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        best = manager.best_step()
        return best if best is not None else manager.latest_step()
    step = int(which)
    if step not in steps:
        raise CheckpointError(f"{directory}: no checkpoint at step {step}; available: {sorted(steps)}")
    return step


def restore(manager: ocp.CheckpointManager, step: int, target):
    """The train state, into the structure, dtypes and shardings of `target` (concrete or abstract)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract)}))
    return restored[STATE_ITEM]


def restore_progress(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """A mid-epoch checkpoint's `progress` record; None for an epoch-end one."""
    if PROGRESS_ITEM not in manager.item_metadata(step).keys():
        return None
    return manager.restore(step, args=ocp.args.Composite(**{PROGRESS_ITEM: ocp.args.JsonRestore()}))[PROGRESS_ITEM]
