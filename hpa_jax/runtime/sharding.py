"""The 1-D data-parallel device mesh and host-to-device batch placement (the reductions over the
mesh, the same bits however the devices are spread over processes, are `hpa_jax.collectives`).

All devices of all processes form one mesh axis, `MESH_AXIS`; params are replicated and batches
split on their leading axis. The mesh lists devices process by process, so each process's
devices hold one contiguous block of the global batch: process p feeds rows
[p * B/P, (p + 1) * B/P) of every global batch (`pipeline.train_batches`, `eval_batches`).
"""

import collections

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hpa_jax.collectives import MESH_AXIS

REDUCTIONS = ("auto", "ordered", "psum")   # train.reduction
ALL_REDUCE_BACKENDS = ("gpu", "tpu")       # where "auto" is psum


def resolve_reduction(reduction: str, platform: str | None = None) -> str:
    """`train.reduction` as the step runs it: "auto" is psum (one all-reduce of the gradients) on
    GPUs and TPUs, whose convolutions are not bit-reproducible across topologies anyway unless XLA is
    asked (`startup.DETERMINISTIC_GPU_FLAG`), and "ordered" on CPUs, where it makes 1 process x 8
    devices give the bits of 2 x 4 (`collectives.ordered_sum`)."""
    if reduction == "auto":
        return "psum" if (platform or jax.default_backend()) in ALL_REDUCE_BACKENDS else "ordered"
    return reduction


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


def replicated_to_host(x) -> np.ndarray:
    """A replicated global array as numpy on every process (its local copy, no communication)."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def prefetch_to_devices(batches, mesh: Mesh, size: int = 2, keys=None):
    """`batches` (host dicts) put on the devices `size` batches ahead of the one yielded, so each
    transfer is under way while the step before it runs (on GPUs `put_batch` returns before the
    copy ends). `keys`: the entries to put (default all)."""
    queue = collections.deque()
    for batch in batches:
        queue.append(put_batch(mesh, {k: v for k, v in batch.items() if keys is None or k in keys}))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
