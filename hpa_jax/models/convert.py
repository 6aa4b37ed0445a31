"""Import timm / torchvision ImageNet weights into the Flax encoders, every tensor accounted for.

    python -m hpa_jax.models.convert --model resnet50 --src resnet50.safetensors --out weights/resnet50
    python -m hpa_jax.models.convert --model seresnext50_32x4d --src model.pth --out DIR --no-head

Every tensor of the checkpoint is matched by name (through the family's `flax_module_path`)
and shape to one Flax variable, and every Flax variable must receive one: anything left over
on either side is an error that lists it. A popular HPA repository silently skipped the first
convolution when the channel counts differed; here the 3-channel ImageNet stem is widened to
R, G, B, Y by a stated rule instead:

- `red` (default, the 2018 winner's choice): the yellow (ER) filter is a copy of the red
  (microtubule) filter; both are cytoskeletal/cytoplasmic stains with similar textures.
- `mean`: the yellow filter is the mean of the three ImageNet filters.

The output is one orbax checkpoint (the variables plus a metadata record) that training loads
with `--config.model.pretrained=DIR`. `.safetensors` needs no torch; `.pth`/`.pt`/`.bin` do.
"""

import pathlib
import sys
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from hpa_jax.errors import CheckpointError, ConfigError, UserError, file_errors, one_line_errors
from hpa_jax.models import FAMILY_OF, TRACE_SIZE, create_model

PROG = "hpa_jax.models.convert"

STEM_RULES = ("red", "mean")
_LEAF = {"running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var"),
         "bias": ("params", "bias")}


def _listing(items, limit: int = 8) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Tensors of a timm/torchvision checkpoint as float32 numpy arrays, keyed as in PyTorch."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    elif path.suffix in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError:
            raise UserError(f"{path}: reading {path.suffix} checkpoints needs torch; "
                            "convert it to .safetensors or `pip install torch`") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
        for wrapper in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
        tensors = {k.removeprefix("module."): v.float().numpy() for k, v in obj.items()
                   if hasattr(v, "numpy")}
    else:
        raise UserError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors, .pth, .pt or .bin")
    if not tensors:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def _to_flax(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:      # conv (O, I, kh, kw) -> (kh, kw, I, O)
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:      # linear (O, I) -> (I, O)
        return value.T
    return value


def widen_stem(kernel: np.ndarray, in_channels: int, rule: str) -> np.ndarray:
    """(kh, kw, 3, O) ImageNet stem -> (kh, kw, 4, O) for R, G, B, Y by `rule`."""
    if kernel.shape[2] != 3 or in_channels != 4:
        raise ConfigError(f"can only widen a 3-channel stem to 4 channels, not {kernel.shape[2]} to {in_channels}")
    if rule == "red":
        extra = kernel[:, :, :1]
    elif rule == "mean":
        extra = kernel.mean(axis=2, keepdims=True)
    else:
        raise ConfigError(f"unknown stem rule {rule!r}; expected one of {', '.join(STEM_RULES)}")
    return np.concatenate([kernel, extra], axis=2)


def convert_state_dict(name: str, state_dict: Mapping[str, np.ndarray], *, include_head: bool = True,
                       stem_rule: str = "red", in_channels: int = 4, source: str = "checkpoint",
                       width: int = 64) -> dict:
    """timm state_dict -> {"params", "batch_stats"} of `create_model(name, head="gap")`
    (without `head` when `include_head` is False). Raises CheckpointError listing every
    unmatched or mis-shaped tensor. `width` < 64 reads the tensors of a narrowed network (what
    `to_timm_state_dict` writes of one: tests without timm's full-size shapes)."""
    if name not in FAMILY_OF:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(FAMILY_OF))}")
    family = FAMILY_OF[name]
    if family.TIMM_CLASSIFIER is None:
        raise ConfigError(f"{name} has no timm/torchvision counterpart to convert from")
    classifier = family.TIMM_CLASSIFIER
    head_keys = [k for k in state_dict if k.startswith(classifier + ".")]
    num_classes = state_dict[classifier + ".weight"].shape[0] if classifier + ".weight" in state_dict else 28
    model = create_model(name, num_classes, head="gap", width=width)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, TRACE_SIZE, TRACE_SIZE, in_channels)),
                                                 train=False))
    wanted = {path: leaf.shape for path, leaf in traverse_util.flatten_dict(template).items()}
    if not include_head:
        wanted = {path: shape for path, shape in wanted.items() if path[1] != "head"}

    converted, extra, mismatched, widened = {}, [], [], []
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        if key in head_keys:
            if not include_head:
                continue
            module_path = ("head", "fc")
        else:
            module_path = ("encoder", *family.flax_module_path(module))
        if leaf == "weight":
            kind = "kernel" if ("params", *module_path, "kernel") in wanted else "scale"
            path = ("params", *module_path, kind)
        elif leaf in _LEAF:
            collection, flax_leaf = _LEAF[leaf]
            path = (collection, *module_path, flax_leaf)
        else:
            extra.append(key)
            continue
        if path not in wanted or path in converted:
            extra.append(key)
            continue
        torch_shape = tuple(np.shape(value))
        value = _to_flax(np.asarray(value, np.float32))
        if value.ndim == 4 and value.shape[2] == 3 and wanted[path][2] == in_channels != 3 \
                and value.shape[:2] + value.shape[3:] == wanted[path][:2] + wanted[path][3:]:
            value = widen_stem(value, in_channels, stem_rule)
            widened.append(key)
        if value.shape != tuple(wanted[path]):
            mismatched.append(f"{key} {torch_shape} vs {'/'.join(path)} {tuple(wanted[path])}")
            converted[path] = None   # reported once, as mis-shaped rather than also as missing
            continue
        converted[path] = value
    missing = ["/".join(p) for p in wanted if p not in converted]
    problems = []
    if extra:
        problems.append(f"{len(extra)} tensor(s) match nothing in {name}: {_listing(extra)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) have the wrong shape: {_listing(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} {name} variable(s) have no tensor: {_listing(missing)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    if len(widened) > 1:
        raise CheckpointError(f"{source}: {len(widened)} 3-channel convolutions, expected only the stem: "
                              f"{_listing(widened)}")
    variables = traverse_util.unflatten_dict(converted)
    variables.setdefault("batch_stats", {})
    return variables


def _to_torch(value: np.ndarray) -> np.ndarray:
    """The inverse of `_to_flax`: conv (kh, kw, I, O) -> (O, I, kh, kw), linear (I, O) -> (O, I)."""
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:
        return value.T
    return value


_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _torch_tensors(flat: Mapping[tuple, np.ndarray], module_name) -> dict[str, np.ndarray]:
    """{torch key: float32 array} for flattened Flax variables `(collection, *module, leaf)`, each
    module named by `module_name(module)`; every BatchNorm also gets PyTorch's `num_batches_tracked`."""
    tensors = {}
    for (collection, *module, leaf), value in flat.items():
        prefix = module_name(tuple(module))
        value = np.ascontiguousarray(_to_torch(np.asarray(value, np.float32)))
        tensors[f"{prefix}.{_TORCH_LEAF[collection, leaf]}"] = value
        if leaf == "mean":
            tensors[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return tensors


def to_timm_state_dict(name: str, variables: Mapping) -> dict[str, np.ndarray]:
    """The converter's inverse: {"params", "batch_stats"} of `create_model(name, ...)` -> timm's
    state_dict for `timm.create_model(name, in_chans=4, num_classes=...)`. With timm's own head
    ("gap": one FC) its classifier is included; any other head is left out (`num_classes=0` in
    timm loads the rest strictly; `head_state_dict` has it)."""
    if name not in FAMILY_OF or FAMILY_OF[name].TIMM_CLASSIFIER is None:
        raise ConfigError(f"{name} has no timm counterpart to export to")
    family = FAMILY_OF[name]
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)))
    encoder = {(p[0], *p[2:]): v for p, v in flat.items() if p[1] == "encoder"}
    tensors = _torch_tensors(encoder, family.timm_module_name)
    head = {(p[0], *p[2:]): v for p, v in flat.items() if p[1] == "head"}
    if set(head) == {("params", "fc", "kernel"), ("params", "fc", "bias")}:   # the gap head: timm's classifier
        tensors.update(_torch_tensors(head, lambda module: family.TIMM_CLASSIFIER))
    return tensors


def head_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
    """The classifier head's variables in PyTorch's layout and names: `head.<flax module>.<leaf>`
    (`head.buffer0.weight` (out, in), `head.fc.bias`, `head.fc_bn.running_mean`, ...)."""
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)))
    head = {(p[0], *p[2:]): v for p, v in flat.items() if p[1] == "head"}
    return _torch_tensors(head, lambda module: ".".join(("head", *module)))


def save_pretrained(out, variables: dict, metadata: dict) -> pathlib.Path:
    """One orbax checkpoint holding the variables and how they were made (orbax writes it
    under a temporary name and renames it when complete)."""
    out = pathlib.Path(out).absolute()
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --out or remove it")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    with file_errors(out, "writing the converted weights", CheckpointError):
        checkpointer.save(out, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables),
                                                       metadata=ocp.args.JsonSave(metadata)))
    return out


def load_pretrained(directory) -> tuple[dict, dict]:
    """(variables, metadata) written by `save_pretrained`, as host numpy arrays."""
    directory = pathlib.Path(directory).absolute()
    if not (directory / "variables").is_dir():
        raise CheckpointError(f"{directory}: not a converted checkpoint (no variables/ inside); "
                              "make one with `python -m hpa_jax.models.convert`")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    with file_errors(directory, "reading the converted weights", CheckpointError):
        restored = checkpointer.restore(directory, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(), metadata=ocp.args.JsonRestore()))
    return jax.tree.map(np.asarray, dict(restored["variables"])), dict(restored["metadata"])


def apply_pretrained(variables: dict, directory, name: str) -> dict:
    """The initial `variables` with the encoder (and, if it fits, the head) of a converted
    checkpoint; any encoder variable that is missing or of another shape is an error."""
    loaded, metadata = load_pretrained(directory)
    if metadata.get("model") != name:
        raise ConfigError(f"{directory}: converted for {metadata.get('model')!r}, but model.name is {name!r}")
    flat_init = traverse_util.flatten_dict(variables)
    flat_loaded = traverse_util.flatten_dict(loaded)
    encoder = lambda path: path[1] == "encoder"  # noqa: E731
    problems = []
    missing = ["/".join(p) for p in flat_init if encoder(p) and p not in flat_loaded]
    unused = ["/".join(p) for p in flat_loaded if encoder(p) and p not in flat_init]
    shapes = [f"{'/'.join(p)} {flat_loaded[p].shape} vs {tuple(flat_init[p].shape)}" for p in flat_init
              if encoder(p) and p in flat_loaded and flat_loaded[p].shape != tuple(flat_init[p].shape)]
    for label, items in (("missing", missing), ("unused", unused), ("of another shape (is model.width 64?)", shapes)):
        if items:
            problems.append(f"{len(items)} encoder variable(s) {label}: {_listing(items)}")
    if problems:
        raise CheckpointError(f"{directory}: " + "; ".join(problems))
    head = {p: v for p, v in flat_loaded.items() if not encoder(p)}
    head_fits = bool(head) and all(p in flat_init and v.shape == tuple(flat_init[p].shape) for p, v in head.items()) \
        and {p for p in flat_init if not encoder(p)} == set(head)
    if head and not head_fits:
        raise ConfigError(f"{directory}: its classifier does not fit the configured head; "
                          "convert with --no-head to train a new head on the pretrained encoder")
    merged = dict(flat_init)
    for path, value in flat_loaded.items():
        merged[path] = jnp.asarray(value, flat_init[path].dtype)
    return traverse_util.unflatten_dict(merged)


def convert_checkpoint(model: str, src, out, *, include_head: bool = True,
                       stem_rule: str = "red") -> tuple[pathlib.Path, int, int]:
    """Converts the timm/torchvision checkpoint `src` for the encoder `model` and saves it in `out`
    (`save_pretrained`, with a record of what was done): (the folder, tensors, values)."""
    variables = convert_state_dict(model, load_state_dict(src), include_head=include_head, stem_rule=stem_rule,
                                   source=src)
    leaves = jax.tree.leaves(variables)
    count = sum(int(np.prod(v.shape)) for v in leaves)
    path = save_pretrained(out, variables, {
        "model": model, "source": str(pathlib.Path(src).absolute()), "stem_rule": stem_rule,
        "include_head": include_head, "tensors": len(leaves), "values": count})
    return path, len(leaves), count


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (importing registers none)."""
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("model", None, "timm name, e.g. resnet50, seresnext50_32x4d.")
    flags.DEFINE_string("src", None, "timm/torchvision checkpoint: .safetensors, .pth, .pt or .bin.")
    flags.DEFINE_string("out", None, "New folder for the Flax variables (orbax).")
    flags.DEFINE_bool("head", True, "Convert the classifier too; --nohead (or --no-head) leaves it out on purpose.")
    flags.DEFINE_enum("stem_rule", "red", STEM_RULES, "How a 3-channel stem gets its yellow filter: a copy of the "
                      "red one, or the mean of the three.")
    flags.DEFINE_alias("stem-rule", "stem_rule")
    flags.mark_flags_as_required(["model", "src", "out"])


def main(argv):
    from absl import app, flags  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    with one_line_errors(PROG):
        out, tensors, values = convert_checkpoint(f.model, f.src, f.out, include_head=f.head, stem_rule=f.stem_rule)
    print(f"wrote {out}: {tensors} tensors, {values:,} values{'' if f.head else ' (classifier left out)'}")


def cli():
    """The `hpa-jax-convert` console script, as `python -m hpa_jax.models.convert`; README's
    `--no-head` is absl's `--nohead`."""
    from hpa_jax import console  # noqa: PLC0415

    define_flags()
    console.run(main, __name__, argv=["--nohead" if arg == "--no-head" else arg for arg in sys.argv])


if __name__ == "__main__":
    cli()
