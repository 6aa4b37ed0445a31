"""The 1-D data-parallel device mesh, host-to-device batch placement, and reductions over the
mesh that give the same bits however the devices are spread over processes.

All devices of all processes form one mesh axis, `MESH_AXIS`; params are replicated and batches
split on their leading axis. The mesh lists devices process by process, so each process's
devices hold one contiguous block of the global batch: process p feeds rows
[p * B/P, (p + 1) * B/P) of every global batch (`pipeline.train_batches`, `eval_batches`).
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hpa_jax.errors import ConfigError

MESH_AXIS = "data"
REDUCTIONS = ("ordered", "psum")


def make_mesh(devices=None) -> Mesh:
    """All devices, ordered by (process, id): a process's devices are neighbours on the axis."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(sorted(devices, key=lambda d: (d.process_index, d.id))), (MESH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(MESH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_batch(mesh: Mesh, batch):
    """Host arrays of this process's share of the global batch -> global arrays split over the mesh."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def check_divisible(batch_size: int, mesh: Mesh, name: str) -> None:
    if batch_size % mesh.size:
        raise ConfigError(f"{name}={batch_size} is not divisible by the {mesh.size} devices of the mesh; "
                          f"use a multiple of {mesh.size}")


def check_reduction(name: str) -> str:
    if name not in REDUCTIONS:
        raise ConfigError(f"train.reduction={name!r}: expected one of {', '.join(REDUCTIONS)}")
    return name


def ordered_sum(x, axis_name: str = MESH_AXIS, reduction: str = "ordered"):
    """The sum over the mesh axis of a pytree, inside `shard_map`.

    `"ordered"` gathers every device's value and adds them in mesh order on each device: the
    gather moves bits exactly, so the result is the same on 1 process x 8 devices and on
    2 x 4, where `lax.psum` is XLA's in-process all-reduce in one case and gloo's (or NCCL's)
    in the other, each adding in its own order. It moves D times the data of an all-reduce:
    nothing next to a step for the BatchNorm moments and losses; for the gradients of a big
    model on a big mesh, `"psum"` is faster and reproducible only for a fixed topology.
    """
    if reduction == "psum":
        return jax.lax.psum(x, axis_name)
    return jax.tree.map(lambda v: jax.lax.all_gather(v, axis_name).sum(0), x)


def ordered_mean(x, axis_name: str = MESH_AXIS):
    """The mean over the mesh axis of a pytree, in mesh order (see `ordered_sum`), inside `shard_map`
    and differentiable: its gradient is again an ordered mean, where the transpose of an all-gather
    would be a reduce-scatter adding in the topology's own order."""
    return jax.tree.map(lambda v: _ordered_mean(v, axis_name), x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _ordered_mean(x, axis_name):
    return jax.lax.all_gather(x, axis_name).mean(0)


def _ordered_mean_fwd(x, axis_name):
    return _ordered_mean(x, axis_name), None


def _ordered_mean_bwd(axis_name, _, g):
    # out = mean_i x_i on every device d, so x_j's cotangent is mean_d g_d: the same operation.
    # (as the input, the cotangent varies over the axis, which `check_vma` shard_maps check)
    return (jax.lax.pcast(_ordered_mean(g, axis_name), axis_name, to="varying"),)


_ordered_mean.defvjp(_ordered_mean_fwd, _ordered_mean_bwd)


def replicated_to_host(x) -> np.ndarray:
    """A replicated global array as numpy on every process (its local copy, no communication)."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)
