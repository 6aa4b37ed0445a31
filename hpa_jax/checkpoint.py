"""orbax checkpoints in `{workdir}/checkpoints`: the last N epochs, the best by validation
macro-F1 and the end of every warm-restart cycle (snapshots to ensemble), each step saved with
its validation metrics."""

import pathlib

import jax
import orbax.checkpoint as ocp

from hpa_jax.errors import CheckpointError

BEST_METRIC = "val_macro_f1"


def checkpoint_manager(workdir, keep: int = 3, *, keep_steps=(), must_exist: bool = False) -> ocp.CheckpointManager:
    """`keep_steps` are kept whatever else happens (cycle ends); `must_exist` (for
    evaluate/predict) turns a missing folder into a one-line error."""
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    if must_exist and not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoint found; train first (--mode=train)")
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1),
        ocp.checkpoint_managers.CustomSteps(steps=list(keep_steps)),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=lambda metrics: metrics[BEST_METRIC],
                                           best_mode="max")
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, step: int, state, metrics: dict) -> None:
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)


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
    """Restores into the structure, dtypes and shardings of `target` (concrete or abstract)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))
