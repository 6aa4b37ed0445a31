"""orbax checkpoints in `{workdir}/checkpoints`: the last N epochs, the best by
`checkpoint.best_metric` and the end of every warm-restart cycle (snapshots to ensemble), each epoch's saved with
its validation metrics; plus, with `checkpoint.every_steps`, the latest mid-epoch checkpoint.

A checkpoint's items: `default`, the train state (the name an unnamed single-item orbax
checkpoint uses, so checkpoints written before there were other items restore the same way), and
for mid-epoch checkpoints `progress`, a JSON record of where in the epoch it was taken (epoch,
global batches done, the process count, the epoch's losses so far). Epoch-end checkpoints have
no `progress`: the next epoch starts from its beginning, which is a pure function of (seed, epoch).

What survives what: orbax writes a step under a temporary name (`{step}.orbax-checkpoint-tmp*`)
and renames it when complete, so a save killed at any moment leaves no folder orbax lists as a
step (the training manager removes such leftovers when it starts). A step folder that cannot be
read anyway (truncated or missing files, bad metadata, shapes that do not fit) is skipped with
one warning, for the newest (or best) readable one, and moved aside to `unreadable-{step}`: never
deleted, never listed as a step again. A save that fails (disk full, permissions) is a one-line
`CheckpointError`; the steps saved before it are untouched.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import os
import pathlib
import re
import sys

import jax
import orbax.checkpoint as ocp

from hpa_jax.errors import CheckpointError, ConfigError, first_line, is_bug, warn
from hpa_jax.runtime import distributed
from hpa_jax.workdir import Workdir

# What "best" means (`checkpoint.best_metric`), each metric with its direction: +1 higher is
# better. An epoch's checkpoint stores the chosen one's value as BEST_SCORE, signed so that higher
# is better, which is all BestN and 'best' read: readers (evaluate, predict, cv) need no config.
# Checkpoints from before there was a choice have only BEST_METRIC, which they were ranked by.
BEST_METRICS = {"val_macro_f1": 1, "val_macro_f1_fitted": 1, "val_loss": -1}
BEST_METRIC = "val_macro_f1"
BEST_SCORE = "best_score"
STATE_ITEM = "default"
PROGRESS_ITEM = "progress"
AVERAGED = "swa"   # `eval.checkpoint` naming the average `--mode=swa` saves in `Workdir.averaged_checkpoint`


def _not_the_missing_metrics_warning(record: logging.LogRecord) -> bool:
    """orbax warns at every save without metrics when a best metric is tracked; mid-epoch
    checkpoints have none by design, so the warning would only be noise every N steps."""
    return not str(record.msg).startswith("Requested `tracked_metric`; did not provide metrics")


def _not_an_orbax_traceback(record: logging.LogRecord) -> bool:
    """orbax logs the traceback of a failed background save (several times) before raising the
    same exception to the caller, where `save` and `wait` report it in one line, or, for a bug,
    with its traceback."""
    return not (record.levelno >= logging.ERROR and record.exc_info and "orbax" in record.pathname)


def _drop_orbax_leftovers(previous_hook):
    """A restore that fails on one array leaves orbax's other reads pending: their coroutines are
    collected unfinished and tensorstore's callbacks find the event loop closed, each printed as
    an 'unraisable' traceback (hundreds of lines) after the one error that matters, which is
    reported. Those two kinds are dropped; any other goes to the previous hook."""

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        if (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed") \
                or (code is not None and "orbax" in code.co_filename):
            return
        previous_hook(unraisable)

    return hook


def _not_an_orbax_task(record: logging.LogRecord) -> bool:
    """asyncio's 'Task exception was never retrieved' for orbax's other writes of a failed save."""
    return not (record.levelno >= logging.ERROR and "orbax" in record.getMessage())


@functools.cache
def quiet_orbax() -> None:
    """Installs the log filters and the unraisable hook above, once: called by the command lines at
    start-up (never at import), so that a failed save or restore reads as our one line."""
    logging.getLogger("asyncio").addFilter(_not_an_orbax_task)
    logging.getLogger("absl").addFilter(_not_the_missing_metrics_warning)
    logging.getLogger("absl").addFilter(_not_an_orbax_traceback)
    sys.unraisablehook = _drop_orbax_leftovers(sys.unraisablehook)

UNREADABLE_PREFIX = "unreadable-"


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
        keep = set(epoch_ends[max(len(epoch_ends) - self.n, 0):]) if self.n > 0 else set()
        keep.update([len(checkpoints) - 1] if checkpoints else [])
        return [i in keep for i in range(len(checkpoints))]


def set_aside(directory: pathlib.Path, step: int) -> pathlib.Path:
    """Renames the step's folder to `unreadable-{step}` (`-2`, `-3`... if taken), which orbax does
    not list as a step: kept for the user to inspect, never restored or deleted by a run."""
    target, n = directory / f"{UNREADABLE_PREFIX}{step}", 1
    while target.exists():
        n += 1
        target = directory / f"{UNREADABLE_PREFIX}{step}-{n}"
    if jax.process_index() == 0:
        os.rename(directory / str(step), target)
    return target


def _set_aside_unreadable_metrics(directory: pathlib.Path) -> None:
    """orbax reads every step's `metrics` when a manager starts and fails on one it cannot parse;
    such a step goes aside first (even if no other turns out readable: with it in place orbax
    could not list the others), so that the others stay usable. The primary process decides and
    moves; the others wait for it, so that all then list the same steps."""
    if distributed.is_primary():
        _move_unreadable_metrics(directory)
    distributed.barrier("checkpoint: unreadable metrics moved")


def _move_unreadable_metrics(directory: pathlib.Path) -> None:
    for folder in sorted(directory.iterdir()) if directory.is_dir() else ():
        metrics = folder / "metrics" / "metrics"
        if not folder.name.isdigit() or not metrics.is_file():
            continue
        try:
            json.loads(metrics.read_text())
        except (OSError, ValueError) as e:
            moved = set_aside(directory, int(folder.name))
            warn(f"checkpoint step {folder.name} in {folder} is unreadable ({metrics.name}: {first_line(e)}); "
                 f"moved it to {moved.name}")


def epoch_metrics(record: dict, best_metric: str) -> dict:
    """The metrics an epoch's checkpoint is saved with: its validation figures and BEST_SCORE."""
    metrics = {name: float(record[name]) for name in BEST_METRICS if name in record}
    return {**metrics, BEST_SCORE: BEST_METRICS[best_metric] * float(record[best_metric])}


def best_score(metrics: dict | None) -> float | None:
    """What ranks a checkpoint for 'best' (higher is better); None for one saved without metrics."""
    if not metrics:
        return None
    return metrics.get(BEST_SCORE, metrics.get(BEST_METRIC))


def checkpoint_manager(workdir, keep: int = 3, *, keep_steps=(), must_exist: bool = False,
                       writer: bool = False, averaged: bool = False) -> ocp.CheckpointManager:
    """The run's `checkpoints/`, or with `averaged` the folder of `--mode=swa`'s average.
    `keep_steps` are kept whatever else happens (cycle ends); `must_exist` (for
    evaluate/predict) turns a missing folder into a one-line error. Mid-epoch checkpoints have no
    metrics: BestN ignores them (`keep_checkpoints_without_metrics=False`, or it would keep every
    one of them forever), so only `LatestEpochsAndResumePoint` decides about them. The `writer`
    (training, the folder's only writer) removes the temporary folders of saves that were killed;
    a reader must not, as they may be a running training's save in progress."""
    run = Workdir(workdir)
    directory = (run.averaged_checkpoint if averaged else run.checkpoints).absolute()
    if must_exist and not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoint found; {_make_one_first(directory)}")
    _set_aside_unreadable_metrics(directory)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        LatestEpochsAndResumePoint(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=best_score, n=1,
                                      keep_checkpoints_without_metrics=False),
        ocp.checkpoint_managers.CustomSteps(steps=list(keep_steps)),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=best_score,
                                           best_mode="max", cleanup_tmp_directories=writer)
    # Named handlers put the manager in multi-item mode up front; left to orbax, the mode would be
    # guessed from the first step restored and a later save with the other item would be refused.
    # The state's handler is orbax's PyTree handler (what StandardCheckpointHandler runs inside,
    # the same files), which can also restore a part of the tree (`restore` with a dict target).
    handlers = {STATE_ITEM: ocp.PyTreeCheckpointHandler(), PROGRESS_ITEM: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, state, metrics: dict | None, progress: dict | None = None) -> None:
    """An epoch end's checkpoint has `metrics` (validation) and no `progress`; a mid-epoch one the
    reverse. `progress` must be JSON-serialisable and not mutated afterwards (saving is async)."""
    items = {STATE_ITEM: ocp.args.PyTreeSave(state)}
    if progress is not None:
        items[PROGRESS_ITEM] = ocp.args.JsonSave(progress)
    with _write_errors(manager):   # also the previous (asynchronous) save's errors, which surface here
        manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def wait(manager: ocp.CheckpointManager) -> None:
    """Waits for the save in progress; its failure is a one-line `CheckpointError`."""
    with _write_errors(manager):
        manager.wait_until_finished()


def _failed_write(error: BaseException) -> tuple[str, str] | None:
    """(file, reason) if `error` is a failed write of the file system (disk full, permissions,
    quota): an OSError from orbax's own files, or tensorstore's ValueError for the arrays, which
    carries the OS error code and the file in its text; None for anything else."""
    if isinstance(error, OSError):
        return str(error.filename or ""), error.strerror or first_line(error)
    text = str(error)
    code = re.search(r"os_error_code='(\d+)'", text)
    if not isinstance(error, ValueError) or not (code or text.startswith(("RESOURCE_EXHAUSTED", "PERMISSION_DENIED"))):
        return None
    files = re.findall(r'"(/[^"]+)"', text)
    return (files[-1] if files else ""), os.strerror(int(code.group(1))) if code else text.split(":")[0]


@contextlib.contextmanager
def _write_errors(manager: ocp.CheckpointManager):
    """A save that the file system refused, as one line naming the file. orbax writes under a
    temporary name until the step is complete, so the steps before it are intact (the temporary
    folder goes when training next starts)."""
    try:
        yield
    except (OSError, ValueError) as e:
        failed = _failed_write(e)
        if failed is None:
            raise
        where, reason = failed
        manager.reload()     # from the disk: orbax already forgot the steps this save was to replace
        steps = ", ".join(map(str, sorted(manager.all_steps()))) or "none"
        raise CheckpointError(f"{where or manager.directory}: saving a checkpoint failed ({reason}); training "
                              f"stopped; the checkpoints saved before are intact (steps: {steps})") from None


def resolve_step(manager: ocp.CheckpointManager, which) -> int:
    """'best', 'latest' or a step number -> an existing step, or a one-line error."""
    steps = manager.all_steps()
    directory = manager.directory
    if not steps:
        raise CheckpointError(f"{directory}: no checkpoint found; {_make_one_first(directory)}")
    if which == "latest":
        return manager.latest_step()
    if which == "best":
        best = manager.best_step()
        return best if best is not None else manager.latest_step()
    try:
        step = int(which)
    except ValueError:
        raise ConfigError(f"eval.checkpoint={which!r}: expected 'best', 'latest', '{AVERAGED}' or a step number") \
            from None
    if step not in steps:
        raise CheckpointError(f"{directory}: no checkpoint at step {step}; available: {sorted(steps)}")
    return step


def _make_one_first(directory) -> str:
    """What writes the checkpoints `directory` lacks: training, or `--mode=swa` for the average."""
    if pathlib.Path(directory).name == Workdir("").averaged_checkpoint.name:
        return "average the run's checkpoints first (--mode=swa)"
    return "train first (--mode=train)"


def candidates(manager: ocp.CheckpointManager, which: str) -> list[int]:
    """The steps to try for 'latest' (newest first) or 'best' (by `best_score`, ties to the
    newer; then the steps without metrics, newest first, as orbax's `best_step` falls back)."""
    steps = sorted(manager.all_steps(), reverse=True)
    if which == "latest":
        return steps
    scored = [best_score(manager.metrics(s)) for s in steps]
    ranked = sorted((-score, -step) for step, score in zip(steps, scored) if score is not None)
    return [-step for _, step in ranked] + [step for step, score in zip(steps, scored) if score is None]


def restore_readable(manager: ocp.CheckpointManager, which, target, *, with_progress: bool = True):
    """(step, state, progress) from the checkpoint `which` names: 'best' or 'latest' fall back to
    the best or newest readable one, each unreadable one before it named in one warning and moved
    aside (only once a readable one is found: with none readable, nothing moves and the error lists
    them, since then the config rather than the files may be at fault); an explicit step that is
    unreadable is a one-line error. `progress` is None for epoch-end checkpoints (or unless
    `with_progress`)."""
    directory = pathlib.Path(manager.directory)

    def read(step):
        """((state, progress), None), or (None, why the step is unreadable); bugs are raised."""
        metadata = directory / str(step) / STATE_ITEM / "_METADATA"
        try:
            if not metadata.is_file():   # orbax would go on without it and fail on the tree's structure
                raise FileNotFoundError(f"{metadata.relative_to(directory)} is missing")
            state = restore(manager, step, target)
            return (state, restore_progress(manager, step) if with_progress else None), None
        except Exception as e:
            if is_bug(e):
                raise
            return None, first_line(e)

    if which not in ("best", "latest"):
        step = resolve_step(manager, which)
        restored, reason = read(step)
        if restored is None:
            raise CheckpointError(f"{directory / str(step)}: checkpoint step {step} is unreadable: {reason}")
        return step, *restored
    resolve_step(manager, which)     # no checkpoint at all: the usual one-line error
    failed = []
    for step in candidates(manager, which):
        restored, reason = read(step)
        if restored is None:
            failed.append((step, reason))
            continue
        state, progress = restored
        if failed:    # every process read the same files and failed on the same steps
            distributed.barrier("checkpoint: unreadable steps found")
        for bad, reason in failed:
            moved = set_aside(directory, bad)
            warn(f"checkpoint step {bad} in {directory / str(bad)} is unreadable ({reason}); moved it to "
                 f"{moved.name}, using step {step}")
        if failed:
            distributed.barrier("checkpoint: unreadable steps moved")
            manager.reload()
        return step, state, progress
    listing = "; ".join(f"step {step}: {reason}" for step, reason in failed)
    raise CheckpointError(f"{directory}: no readable checkpoint ({listing}); if the config changed, use the one "
                          f"they were trained with, otherwise move them away to start afresh")


def restore(manager: ocp.CheckpointManager, step: int, target):
    """The train state, into the structure, dtypes and shardings of `target` (concrete or abstract).
    A dict `target` holding some of the state's fields (`{"params": ..., "batch_stats": ...}`:
    evaluation's variables, without the optimiser state) reads only those."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    args = ocp.args.PyTreeRestore(item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                                  partial_restore=isinstance(target, dict))
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE_ITEM: args}))
    return restored[STATE_ITEM]


def restore_progress(manager: ocp.CheckpointManager, step: int) -> dict | None:
    """A mid-epoch checkpoint's `progress` record; None for an epoch-end one."""
    if PROGRESS_ITEM not in manager.item_metadata(step).keys():
        return None
    return manager.restore(step, args=ocp.args.Composite(**{PROGRESS_ITEM: ocp.args.JsonRestore()}))[PROGRESS_ITEM]
