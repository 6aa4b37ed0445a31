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

A ResNet's map has one value per 32 x 32 pixels, coarse next to a nucleus. `cam_shifts=n`
refines it n times: the map is averaged over the image moved by multiples of 32 / n pixels
(`shift_averaged_cams`), at n**2 times the cost. Maps are per class (B, C, h*n, w*n); `cams.py`
draws them. The input is the untransformed image: test-time augmentation is for the
probabilities only.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hpa_jax.collectives import MESH_AXIS
from hpa_jax.data import pipeline
from hpa_jax.errors import ConfigError
from hpa_jax.models import TRACE_SIZE


def check_has_map(model, name: str) -> None:
    """A ConfigError for an encoder whose output is pooled to 1 x 1 whatever the input (GapNet-PL
    pools every block itself): there is no map to show."""
    image = jax.ShapeDtypeStruct((1, TRACE_SIZE, TRACE_SIZE, 4), jnp.float32)
    shape = jax.eval_shape(lambda x: model.encoder.init_with_output(jax.random.key(0), x, train=False)[0], image)
    if shape.shape[1:3] == (1, 1):
        raise ConfigError(f"--cams: the {name} encoder pools its feature maps itself (its output is 1x1), so there "
                          f"is no map to show; embeddings and probabilities work")


def split_variables(variables):
    """The encoder's and the head's variables of a `Classifier` (the head has BatchNorm statistics
    only with `model.head.batch_norm`)."""
    params, stats = variables["params"], variables.get("batch_stats", {})

    def part(name):
        return {"params": params[name], **({"batch_stats": stats[name]} if name in stats else {})}

    return part("encoder"), part("head")


def grad_cam(model, head_vars, fmap):
    """Grad-CAM maps (B, C, h, w) of every class from the encoder's last feature map (B, h, w, K)."""
    def logits_of_shift(shift, f):    # one image; shift: (K,) added to every position
        return model.head.apply(head_vars, (f + shift.astype(f.dtype))[None], train=False)[0]

    zeros = jnp.zeros(fmap.shape[-1], jnp.float32)
    jacobian = jax.vmap(jax.jacrev(logits_of_shift), in_axes=(None, 0))(zeros, fmap)   # (B, C, K)
    alpha = jacobian / (fmap.shape[1] * fmap.shape[2])
    return jax.nn.relu(jnp.einsum("bhwk,bck->bchw", fmap.astype(jnp.float32), alpha))


def shift_averaged_cams(model, encoder_vars, head_vars, x, shifts: int):
    """Grad-CAM at `shifts` times the feature map's resolution: the image (reflect-padded) is
    moved by every multiple of stride / shifts (stride = input side / map side, 32 for ResNets)
    along both axes, each moved copy's map is spread over the finer grid and moved back, and the
    `shifts`**2 maps are averaged. Needs sides divisible by the stride (else `shifts` is 1)."""
    height, width = x.shape[1:3]
    fmap = model.encoder.apply(encoder_vars, x, train=False)
    h, w = fmap.shape[1:3]
    stride = height // h
    if shifts <= 1 or height != h * stride or width != w * stride or stride % shifts:
        return grad_cam(model, head_vars, fmap)
    step = stride // shifts
    padded = jnp.pad(x, ((0, 0), (stride, stride), (stride, stride), (0, 0)), mode="reflect")
    offsets = jnp.asarray([(dy, dx) for dy in range(shifts) for dx in range(shifts)], jnp.int32)

    def one_shift(offset):
        dy, dx = offset[0], offset[1]
        crop = jax.lax.dynamic_slice(padded, (0, stride - dy * step, stride - dx * step, 0),
                                     (x.shape[0], height + stride, width + stride, x.shape[3]))
        maps = grad_cam(model, head_vars, model.encoder.apply(encoder_vars, crop, train=False))   # (B, C, h+1, w+1)
        fine = jnp.repeat(jnp.repeat(maps, shifts, axis=2), shifts, axis=3)   # cells of `step` px
        return jax.lax.dynamic_slice(fine, (0, 0, dy, dx), (*fine.shape[:2], h * shifts, w * shifts))

    return jax.lax.map(one_shift, offsets).mean(axis=0)


def make_explain_step(model, config, mesh, *, cams: bool = True, features: bool = True, cam_shifts: int = 1):
    """jit(shard_map(...)): (variables, uint8 images (B, H, W, 4)) -> {"features": (B, K) float32,
    "cams": (B, C, h * cam_shifts, w * cam_shifts) float32 Grad-CAM maps}, each only when asked for."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)

    def forward(variables, images):
        encoder_vars, head_vars = split_variables(variables)
        x = pipeline.normalize(images, mean, std).astype(model.encoder.dtype)
        out = {}
        if features:
            out["features"] = model.encoder.apply(encoder_vars, x, train=False).astype(jnp.float32).mean(axis=(1, 2))
        if cams:
            out["cams"] = shift_averaged_cams(model, encoder_vars, head_vars, x, cam_shifts)
        return out

    return jax.jit(jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)), out_specs=P(MESH_AXIS),
                                 check_vma=False))
