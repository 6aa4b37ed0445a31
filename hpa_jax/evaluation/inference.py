"""The jitted predict step (test-time augmentation, probabilities gathered from every device),
running it over a source of images, and restoring a checkpoint's variables for it."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.data import pipeline
from hpa_jax.models import TRACE_SIZE, create_model_from_config
from hpa_jax.runtime import checkpoint, distributed, sharding


def d4_transform(images: jnp.ndarray, k: int) -> jnp.ndarray:
    """The k-th of the 8 dihedral transforms of (B, H, W, C) images: k % 4 quarter turns, then a
    horizontal flip for k >= 4 (k = 0 is the identity)."""
    images = jnp.rot90(images, k % 4, axes=(1, 2))
    return images[:, :, ::-1] if k >= 4 else images


def make_predict_step(model, config, mesh):
    """jit(shard_map(forward)) in inference mode: (variables, uint8 images) -> float32
    probabilities, averaged over the test-time augmentations `eval.tta` (D4 indices 0..7),
    gathered from all devices and replicated, so that every process holds the whole batch's."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    transforms = tuple(int(k) for k in config.eval.tta)

    def forward(variables, images):
        x = pipeline.normalize(images, mean, std)
        probs = [jax.nn.sigmoid(model.apply(variables, d4_transform(x, k), train=False)) for k in transforms]
        return jax.lax.all_gather(sum(probs) / len(probs), MESH_AXIS, tiled=True)

    return distributed.Together(jax.jit(jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)),
                                                      out_specs=P(), check_vma=False)), "predict step")


def open_eval_batches(config, source: pipeline.ImageSource, num_passes: int = 1):
    """`pipeline.eval_batches` of `source` as the run's config reads it (training's readers,
    `pipeline.readers`; `eval.batch_size`), this process's share, `num_passes` passes in a row."""
    num_threads, num_workers, prefetch = pipeline.readers(config.data, source)
    return pipeline.eval_batches(source, batch_size=config.eval.batch_size, num_threads=num_threads,
                                 prefetch=prefetch, num_workers=num_workers, process_index=jax.process_index(),
                                 process_count=jax.process_count(), num_passes=num_passes)


def predict_probs(step, variables, mesh, config, source: pipeline.ImageSource, *, desc: str,
                  batches=None) -> np.ndarray:
    """Probabilities (N, C) for every image of `source`, in order, on every process (each reads
    its share of every batch); `step` is `make_predict_step(...)`, built once per run so that it
    compiles once. The device runs a batch ahead of the host: batch b's probabilities are read
    back once batch b + 1 is queued. `batches`: an open `open_eval_batches` iterator at the start
    of a pass, of which one pass is read (and which stays open for the next); else one is opened
    for this call and closed after it."""
    batch_size = config.eval.batch_size
    total = pipeline.eval_batch_count(len(source), batch_size)
    owned = batches is None
    if owned:
        batches = open_eval_batches(config, source)
    out, queued = [], []

    def read_back():
        b, probs = queued.pop(0)
        out.append(sharding.replicated_to_host(probs)[b * batch_size + np.arange(batch_size) < len(source)])

    try:
        for b, batch in enumerate(tqdm(itertools.islice(batches, total), total=total, desc=desc, unit="batch",
                                       dynamic_ncols=True, leave=False, disable=not distributed.is_primary())):
            queued.append((b, step(variables, sharding.put_batch(mesh, batch["image"]))))
            if len(queued) > 1:
                read_back()
        while queued:
            read_back()
    finally:
        if owned:
            batches.close()
    if len(out) != total:
        raise RuntimeError(f"{desc}: the reader ended after {len(out)} of {total} batches")
    return np.concatenate(out) if out else np.zeros((0, config.num_classes), np.float32)


def abstract_variables(model, in_channels: int, mesh) -> dict:
    """The model's params and BatchNorm statistics as shapes and dtypes, replicated over `mesh`,
    traced (`jax.eval_shape`) without computing or allocating anything: what a checkpoint's
    variables are restored into. Params do not depend on the image size traced."""
    dummy = jax.ShapeDtypeStruct((1, TRACE_SIZE, TRACE_SIZE, in_channels), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), dummy)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
                        {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})


def variables_target(model, config, mesh) -> dict:
    """`abstract_variables` without an empty tree (GapNet-PL has no BatchNorm statistics): what a
    checkpoint's params and statistics are read into."""
    target = abstract_variables(model, config.in_channels, mesh)
    return {name: tree for name, tree in target.items() if tree}


def restore_variables(config, workdir, which):
    """(model, mesh, variables, step) from the checkpoint `which` ('best', 'latest', a step, or
    'swa': `--mode=swa`'s average, whose step is the newest it averaged); 'best' and 'latest' fall
    back to the best or newest readable checkpoint. Only the params and BatchNorm statistics are
    read, not the optimiser state."""
    model = create_model_from_config(config)
    mesh = sharding.make_mesh()
    averaged = which == checkpoint.AVERAGED
    manager = checkpoint.checkpoint_manager(workdir, must_exist=True, averaged=averaged)
    step, variables, _ = checkpoint.restore_readable(manager, "latest" if averaged else which,
                                                     variables_target(model, config, mesh), with_progress=False)
    return model, mesh, {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}, step
