"""The data-parallel mesh axis's name, sums over it in a fixed order and a batch's moments
combined over it, inside `shard_map`: what the train step and BatchNorm use to combine the
devices' parts of a batch.
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


def batch_moments(mean, var, axis_name: str = MESH_AXIS):
    """The mean and (biased) variance of a batch split over the mesh axis, from each device's own
    `mean` and `var` (of equally many values), inside `shard_map`: one all-gather forward and one
    backward, where a mean then a variance of the centred values would be two serial collectives
    each way.

    The devices' moments are combined as Chan et al. do (the mean of the variances plus the
    variance of the means), which is the two-pass variance of the whole batch up to rounding and
    never subtracts E[x]^2 from E[x^2]. The gather moves bits exactly and every device adds in
    mesh order, so the result is the same on 1 process x 8 devices and 2 x 4.
    """
    combined = _gathered_moments(jax.numpy.stack([mean, var]), axis_name)
    return combined[0], combined[1]


def _combine_moments(gathered):
    """(D, 2, C) per-device (mean, variance) -> (2, C) the batch's, adding in mesh order."""
    means, variances = gathered[:, 0], gathered[:, 1]
    mean = means.mean(0)
    return jax.numpy.stack([mean, variances.mean(0) + jax.numpy.square(means - mean).mean(0)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gathered_moments(local, axis_name):
    return _combine_moments(jax.lax.all_gather(local, axis_name))


def _gathered_moments_fwd(local, axis_name):
    gathered = jax.lax.all_gather(local, axis_name)
    return _combine_moments(gathered), gathered


def _gathered_moments_bwd(axis_name, gathered, g):
    # Every device computes the same function of the same gathered moments, so device j's
    # cotangent is that function's transpose applied to the sum over devices of the outputs'
    # cotangents: one more gather (summed in mesh order), then j's row of a local VJP.
    total = jax.lax.all_gather(g, axis_name).sum(0)
    _, vjp = jax.vjp(_combine_moments, gathered)
    (rows,) = vjp(total)
    mine = jax.lax.dynamic_index_in_dim(rows, jax.lax.axis_index(axis_name), keepdims=False)
    return (jax.lax.pcast(mine, axis_name, to="varying"),)


_gathered_moments.defvjp(_gathered_moments_fwd, _gathered_moments_bwd)
