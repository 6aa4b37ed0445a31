"""What the encoder saw: pooled features (embeddings) and class activation maps, in one jitted step.

Both come from the encoder's last feature map F (B, h, w, K), before the head.

* Embeddings are F averaged over h, w: (B, K), K the encoder's feature width, whatever the head
  pools (ACP's max half is a peak detector, not a description of the image).
* Class activation maps are Grad-CAM (Selvaraju et al. 2017): class c's map is
  relu(sum_k alpha_ck F_k), alpha_ck the gradient of logit c with respect to F_k averaged over
  the h x w positions. The gradient is taken with respect to a shift of each feature plane as a
  whole, which is that average times h*w, so each image costs one small Jacobian of the head
  alone (B x C x K), not C backward passes. For a plain GAP + linear head (`model.head.pool="gap"`
  without buffering layers) alpha_c is the classifier's weight column over h*w, and the map is
  exactly the CAM of Zhou et al. (2016) up to that scale; for the paper's ACP head the max half
  adds its weight column in full (the gradient of a plane's max with respect to the plane's shift).

Maps are per class at feature-map resolution (B, C, h, w); `cams.py` draws them. The input is
the untransformed image: test-time augmentation is for the probabilities only.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hpa_jax.data import pipeline
from hpa_jax.models.resnet import MESH_AXIS


def _split_variables(variables):
    """The encoder's and the head's variables of a `Classifier` (the head has BatchNorm statistics
    only with `model.head.batch_norm`)."""
    params, stats = variables["params"], variables.get("batch_stats", {})

    def part(name):
        return {"params": params[name], **({"batch_stats": stats[name]} if name in stats else {})}

    return part("encoder"), part("head")


def make_explain_step(model, config, mesh, *, cams: bool = True, features: bool = True):
    """jit(shard_map(...)): (variables, uint8 images (B, H, W, 4)) -> {"features": (B, K) float32,
    "cams": (B, C, h, w) float32 Grad-CAM maps}, each only when asked for."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)

    def forward(variables, images):
        encoder_vars, head_vars = _split_variables(variables)
        x = pipeline.normalize(images, mean, std).astype(model.encoder.dtype)
        fmap = model.encoder.apply(encoder_vars, x, train=False)
        out = {}
        if features:
            out["features"] = fmap.astype(jnp.float32).mean(axis=(1, 2))
        if cams:
            def logits_of_shift(shift, f):    # one image; shift: (K,) added to every position
                return model.head.apply(head_vars, (f + shift.astype(f.dtype))[None], train=False)[0]

            zeros = jnp.zeros(fmap.shape[-1], jnp.float32)
            jacobian = jax.vmap(jax.jacrev(logits_of_shift), in_axes=(None, 0))(zeros, fmap)   # (B, C, K)
            alpha = jacobian / (fmap.shape[1] * fmap.shape[2])
            maps = jnp.einsum("bhwk,bck->bchw", fmap.astype(jnp.float32), alpha)
            out["cams"] = jax.nn.relu(maps)
        return out

    return jax.jit(jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)), out_specs=P(MESH_AXIS),
                                 check_vma=False))
