"""The 1-D data-parallel device mesh and host-to-device batch placement.

All devices of all processes form one mesh axis, "data"; params are replicated and batches
split on their leading axis. Multi-host runs need nothing more than `jax.distributed`.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hpa_jax.errors import ConfigError
from hpa_jax.models.resnet import MESH_AXIS


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (MESH_AXIS,))


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
