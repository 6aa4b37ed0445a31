"""The data-parallel mesh axis's name and sums and means over it in a fixed order, inside
`shard_map`: what the train step and BatchNorm use to combine the devices' parts of a batch.
Models import this, not the runtime that builds the mesh (`hpa_jax.runtime.sharding`).
"""

import functools

import jax

MESH_AXIS = "data"


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
