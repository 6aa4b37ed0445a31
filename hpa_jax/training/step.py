"""The sharded train step.

One global batch is split over a 1-D device mesh with `shard_map`; the hard sampler ranks the
losses of the whole global batch, gradients and the loss are summed and BatchNorm moments
averaged over the mesh axis, so the update is the same whether the batch runs on one device or
eight (tests/test_train_step.py checks this), with or without gradient accumulation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from hpa_jax.collectives import MESH_AXIS, ordered_sum
from hpa_jax.data import pipeline
from hpa_jax.errors import ConfigError
from hpa_jax.runtime import distributed, sharding
from hpa_jax.training import losses
from hpa_jax.training.state import TrainState


def class_weights_for(config, train_labels: np.ndarray) -> np.ndarray | None:
    """E-loss weights from the class counts of the training folds, or None for an unweighted loss."""
    if not config.loss.e_alpha:
        return None
    return losses.effective_number_weights(train_labels.sum(0), config.loss.e_alpha, config.loss.normalize_weights)


def make_train_step(config, mesh, class_weights=None):
    """jit(shard_map(step)): (state, uint8 images, labels, rng[, d4 codes]) -> (state, metrics);
    with `d4`, each image is first put under its D4 transform (`pipeline.dihedral`).

    Each device sums the losses of its selected samples (all of them unless the hard sampler
    is on) over K, the number selected in the global batch; `psum` over the mesh then gives the
    loss and gradient of the global batch whatever the device count, and BatchNorm averages its
    batch moments over the same axis (`axis_name` in the model). `class_weights` are E-loss's.
    `config` is validated for the mesh's devices (`hpa_jax.config.validate.validate`).

    Gradient accumulation, `train.accumulation_steps` = A > 1 (A = 1 is the plain step above,
    unchanged): each device splits its shard of b = B/D images into A micro-batches of b/A and
    runs them one after the other (`lax.scan`), so activations are those of B/A images; then one
    optimizer update is applied with the summed gradient of sum(selected losses)/K over all B.
    - Micro-batch j is the shard's rows j, j+A, j+2A, ... Shards are contiguous blocks of b (a
      multiple of A), so that is the global samples j, j+A, j+2A, ...: the same set whatever the
      device count, and the step stays device-count independent. The global sample order
      (`hard_selected`, top-K ties) is the unaccumulated one: device-major, then shard row.
    - Hard sampler: the top K = ceil(ratio * B) are ranked over the whole accumulated batch. A
      first, forward-only pass over the A micro-batches gives every sample's loss; the selection
      is made once on the B losses gathered over devices (ties: lower global index first); the
      second pass (forward + backward per micro-batch) weights each sample by selected/K. Both
      passes use the same params, BatchNorm batches and dropout keys, so the losses ranked are
      the losses differentiated. With K = B (ratio 1) the first pass is skipped.
    - BatchNorm normalises each micro-batch with its own moments (averaged over the devices'
      j-th micro-batches), as PyTorch's gradient accumulation does; so for a BN network the
      update equals the large-batch step's exactly only where micro-batch moments equal the
      batch's (e.g. a batch of A copies of one micro-batch), otherwise it is the gradient of the
      same objective with B/A-image BN statistics. The running statistics are updated once per
      step with the mean of the A micro-batches' moments (not PyTorch's A sequential updates),
      so they move at the configured momentum per optimizer step whatever A, as with A = 1.
    - Dropout: micro-batch j's key is the device's key folded with j (masks differ from A = 1's).
    """
    mean, std, loss_config = tuple(config.data.mean), tuple(config.data.std), config.loss
    accumulation = int(config.train.accumulation_steps)
    reduction = sharding.resolve_reduction(config.train.reduction, mesh.devices.flat[0].platform)
    # "device" BatchNorm: each device's running statistics moved with its own moments; they are
    # averaged over the devices with the gradients (one reduction), so the state stays replicated.
    average_batch_stats = config.model.batch_norm_sync == "device"
    devices = mesh.shape[MESH_AXIS]

    def finish(state: TrainState, grads, loss, batch_stats, selected):
        if average_batch_stats:
            grads, loss, batch_stats = ordered_sum((grads, loss, batch_stats), MESH_AXIS, reduction)
            batch_stats = jax.tree.map(lambda s: s / devices, batch_stats)
        else:
            grads, loss = ordered_sum((grads, loss), MESH_AXIS, reduction)
        grad_norm = optax.tree.norm(grads)
        # A non-finite step leaves the state as it was, so what the loop stops with (and never
        # saves) is still the last good state; the host reads `finite` and stops the run.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
        return state, {"loss": loss, "grad_norm": grad_norm, "finite": finite, "hard_selected": selected}

    def step(state: TrainState, images, labels, rng):
        rng = jax.random.fold_in(rng, jax.lax.axis_index(MESH_AXIS))
        x = pipeline.normalize(images, mean, std)

        def loss_fn(params):
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                             rngs={"dropout": rng}, mutable=["batch_stats"])
            per_sample = losses.per_sample_loss(loss_config, logits, labels, class_weights)
            selected, local, k = losses.hard_sample_selection(per_sample, loss_config.hard_sample_ratio, MESH_AXIS)
            return (per_sample * local).sum() / k, (updates.get("batch_stats", {}), selected)

        (loss, (batch_stats, selected)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return finish(state, grads, loss, batch_stats, selected)

    def accumulated_step(state: TrainState, images, labels, rng):
        shard, steps = images.shape[0], accumulation
        if shard % steps:   # the config fits the mesh (`validate`), but a batch of another size may not
            raise ConfigError(f"the per-device batch of {shard} images is not divisible by "
                              f"train.accumulation_steps={steps}; use a divisor of it")
        global_batch = shard * mesh.shape[MESH_AXIS]
        rng = jax.random.fold_in(rng, jax.lax.axis_index(MESH_AXIS))

        def split(x):  # (b, ...) -> (A, b/A, ...): micro-batch j = the shard's rows j, j+A, j+2A, ...
            return x.reshape(shard // steps, steps, *x.shape[1:]).swapaxes(0, 1)

        micro_batches = (split(images), split(labels), jnp.arange(steps))

        def forward(params, images_j, labels_j, j):
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                             pipeline.normalize(images_j, mean, std), train=True,
                                             rngs={"dropout": jax.random.fold_in(rng, j)}, mutable=["batch_stats"])
            return losses.per_sample_loss(loss_config, logits, labels_j, class_weights), updates.get("batch_stats", {})

        k = losses.num_hard_samples(global_batch, loss_config.hard_sample_ratio)
        if k < global_batch:   # first pass: every sample's loss, then one selection over the whole batch
            _, per_sample = jax.lax.scan(lambda _, xs: (None, forward(state.params, *xs)[0]), None, micro_batches)
            per_sample = per_sample.swapaxes(0, 1).reshape(shard)   # back to the shard's row order
            selected, local, k = losses.hard_sample_selection(per_sample, loss_config.hard_sample_ratio, MESH_AXIS)
            weights = split(local)
        else:
            selected = jnp.ones((global_batch,), jnp.float32)
            weights = jnp.ones((steps, shard // steps), jnp.float32)

        def accumulate(carry, xs):
            *batch, w = xs

            def loss_fn(params):
                per_sample, batch_stats = forward(params, *batch)
                return (per_sample * w).sum() / k, batch_stats

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            return jax.tree.map(jnp.add, carry, (grads, loss, batch_stats)), None

        zeros = jax.tree.map(jnp.zeros_like, (state.params, jnp.zeros((), jnp.float32), state.batch_stats))
        (grads, loss, batch_stats), _ = jax.lax.scan(accumulate, zeros, (*micro_batches, weights))
        batch_stats = jax.tree.map(lambda s: s / steps, batch_stats)
        return finish(state, grads, loss, batch_stats, selected)

    sharded = jax.shard_map(step if accumulation == 1 else accumulated_step, mesh=mesh,
                            in_specs=(P(), P(MESH_AXIS), P(MESH_AXIS), P()), out_specs=(P(), P()), check_vma=False)

    def augmented_step(state: TrainState, images, labels, rng, d4=None):
        # the batch's D4 codes (`pipeline.train_batches`): applied here, image by image where it is
        if d4 is not None:
            images = pipeline.dihedral(images, d4)
        return sharded(state, images, labels, rng)

    return distributed.Together(jax.jit(augmented_step, donate_argnums=0), "train step")
