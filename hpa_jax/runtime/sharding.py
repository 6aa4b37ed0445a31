"""The 1-D data-parallel device mesh and host-to-device batch placement (the reductions over the
mesh, the same bits however the devices are spread over processes, are `hpa_jax.collectives`).

All devices of all processes form one mesh axis, `MESH_AXIS`; params are replicated and batches
split on their leading axis. The mesh lists devices process by process, so each process's
devices hold one contiguous block of the global batch: process p feeds rows
[p * B/P, (p + 1) * B/P) of every global batch (`pipeline.train_batches`, `eval_batches`).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hpa_jax.collectives import MESH_AXIS

REDUCTIONS = ("ordered", "psum")   # train.reduction


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
