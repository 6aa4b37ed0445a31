"""The `models` area of scripts/benchmark.py: the encoder zoo against timm, and grouped convolutions.

    python scripts/benchmark.py models [--names resnet50 ...] [--skip parity layers]
    python scripts/benchmark_models.py ...      # the same, run directly

Four tables: parameters and converted-weights parity per encoder; training-step throughput, ours
and timm's measured in turn in the same process, in float32 and bfloat16, at the paper-like
(batch 8, 256 px) and quickstart-like (batch 32, 112 px) shapes; and one grouped 3x3 convolution
per SE-ResNeXt stage under every `model.grouped_conv` implementation next to PyTorch's, which is
what `"auto"` was chosen from; and the zoo's max-pools, whose gradient `layers.max_pool` computes
faster than XLA's own.
"""

import functools
import pathlib

import jax
import numpy as np

from hpa_jax.reporting.performance import (area_main, machine, merge_rows, section_body, subsections, table_rows,
                                           timed_interleaved, when)

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "performance.md"

# One grouped 3x3 convolution per SE-ResNeXt50 stage, (batch, map size, channels), 32 groups:
# the full-size network at 256 px (batch 8) and the quickstart's width 16 at 112 px (batch 32).
GROUPED_LAYERS = [(8, 64, 128), (8, 32, 256), (8, 16, 512), (8, 8, 1024),
                  (32, 28, 32), (32, 14, 64), (32, 7, 128), (32, 4, 256)]
SPLIT_SWEEP = (8, 16, 32, 64)
PARITY, STEPS, LAYERS, POOL = ("### Parameters and parity", "### Training step", "### Grouped convolutions",
                               "### Max-pool gradients")


def parity_size(name: str) -> int:
    """The smallest input the family declares (InceptionV4 75 px, DenseNet121 29 px), else 32 px,
    where a stride-32 ResNet's last map is 1 x 1."""
    from hpa_jax.models import FAMILY_OF

    return getattr(FAMILY_OF[name], "MIN_INPUT_SIZE", 32)


def add_arguments(parser):
    parser.add_argument("--doc", type=pathlib.Path, default=DOC, help="Markdown file whose models section to rewrite")
    parser.add_argument("--names", nargs="*", default=None, help="encoders (default: all registered but resnet18/34)")
    parser.add_argument("--shapes", nargs="*", default=["8x256", "32x112"], help="BATCHxSIZE train-step shapes")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], help="compute dtypes")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each, after a compiling and a warm-up one")
    parser.add_argument("--grouped_conv", default="auto", help="model.grouped_conv for our steps")
    parser.add_argument("--skip", nargs="*", default=[], choices=["parity", "steps", "layers"],
                        help="tables to leave out (layers: the grouped-convolution and max-pool tables)")


def jax_train_step(name: str, batch: int, size: int, dtype: str, grouped_conv: str):
    """A call of hpa_jax's sharded train step (forward, backward, SGD update of the full-size
    encoder with timm's own classifier, the gap head) on one fixed batch."""
    from hpa_jax.config.shipped import load
    from hpa_jax.runtime import sharding
    from hpa_jax.training import optim
    from hpa_jax.models import create_model_from_config
    from hpa_jax.training.state import create_train_state
    from hpa_jax.training.loop import make_train_step

    config = load("default").get_config()
    config.model.name, config.model.dtype, config.model.grouped_conv = name, dtype, grouped_conv
    config.model.head.pool, config.model.head.layers = "gap", ()
    config.train.batch_size = batch
    mesh = sharding.make_mesh()
    tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr)
    state = create_train_state(create_model_from_config(config), tx, jax.random.key(0), image_size=size,
                               in_channels=4)
    state = jax.device_put(state, sharding.replicated(mesh))
    step = make_train_step(config, mesh, None)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 4), dtype=np.uint8)
    labels = (rng.random((batch, 28)) < 0.1).astype(np.float32)
    batch_arrays = sharding.put_batch(mesh, (images, labels))

    def one():
        nonlocal state
        state, metrics = step(state, *batch_arrays, jax.random.key(1))
        jax.block_until_ready(metrics)
    return one


def timm_train_step(name: str, batch: int, size: int, dtype: str):
    """The same step in PyTorch: timm's model, BCE-with-logits, SGD with momentum; bfloat16 as
    PyTorch users run it, under `torch.autocast` (weights and gradients stay float32)."""
    import contextlib

    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, in_chans=4, num_classes=28).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-6)
    images = torch.randn(batch, 4, size, size)
    labels = (torch.rand(batch, 28) < 0.1).float()
    cast = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
            else contextlib.nullcontext)

    def one():
        optimizer.zero_grad()
        with cast():
            logits = model(images)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels).backward()
        optimizer.step()
    return one


def parity_rows(names) -> list[str]:
    from flax import traverse_util

    from hpa_jax.models import FAMILY_OF, TRACE_SIZE, create_model
    from hpa_jax.models.timm_twin import parity_error, timm_param_count

    rows = []
    for name in names:
        model = create_model(name, 28, head="gap")
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, TRACE_SIZE, TRACE_SIZE, 4)),
                                                   train=False))
        ours = sum(int(np.prod(v.shape)) for v in traverse_util.flatten_dict(shapes["params"]).values())
        has_twin = FAMILY_OF[name].TIMM_CLASSIFIER is not None
        theirs = f"{timm_param_count(name):,}" if has_twin else "(no timm model)"
        error = f"{parity_error(name, parity_size(name))[0]:.1e} at {parity_size(name)} px" if has_twin else "-"
        rows.append(f"| {name} | {ours:,} | {theirs} | {error} |")
        print(rows[-1], flush=True)
    return rows


def step_rows(names, shapes, dtypes, steps: int, grouped_conv: str) -> list[str]:
    from hpa_jax.models import FAMILY_OF

    rows = []
    for name in names:
        for shape in shapes:
            batch, size = map(int, shape.split("x"))
            for dtype in dtypes:
                fns = [jax_train_step(name, batch, size, dtype, grouped_conv)]
                has_twin = FAMILY_OF[name].TIMM_CLASSIFIER is not None
                if has_twin:
                    fns.append(timm_train_step(name, batch, size, dtype))
                (first, ours), *theirs = timed_interleaved(fns, steps)
                timm_rate, ratio = (f"{batch / theirs[0][1]:.2f}", f"{theirs[0][1] / ours:.2f}x") if theirs else ("-", "-")
                rows.append(f"| {name} | {batch} x {size} px | {dtype} | {batch / ours:.2f} | {timm_rate} | {ratio} | "
                            f"{first:.0f} s | {when()} |")
                print(rows[-1], flush=True)
    return rows


def layer_rows(steps: int) -> list[str]:
    """One grouped 3x3 convolution (32 groups, stride 1): forward, and forward + backward (the
    gradients of input and kernel), in ms, for each implementation and PyTorch's."""
    import torch
    from jax import lax

    from hpa_jax.models.layers import dense_grouped_conv, resolve_grouped_conv

    groups, pad, dn = 32, ((1, 1), (1, 1)), ("NHWC", "HWIO", "NHWC")
    variants = {"xla": lax.conv_general_dilated,
                "block_diagonal": functools.partial(dense_grouped_conv, split_channels=None),
                **{f"split {c}": functools.partial(dense_grouped_conv, split_channels=c) for c in SPLIT_SWEEP}}
    rows = []
    for batch, size, channels in GROUPED_LAYERS:
        rng = np.random.default_rng(0)
        x = jax.numpy.asarray(rng.standard_normal((batch, size, size, channels), dtype=np.float32))
        k = jax.numpy.asarray(rng.standard_normal((3, 3, channels // groups, channels), dtype=np.float32))
        fns = []
        for conv in variants.values():
            def apply(x, k, conv=conv):
                return conv(x, k, (1, 1), pad, dimension_numbers=dn, feature_group_count=groups)
            forward, backward = jax.jit(apply), jax.jit(jax.grad(lambda x, k, f=apply: f(x, k).sum(), argnums=(0, 1)))
            fns += [lambda f=forward: jax.block_until_ready(f(x, k)), lambda g=backward: jax.block_until_ready(g(x, k))]
        tx = torch.randn(batch, channels, size, size, requires_grad=True)
        tconv = torch.nn.Conv2d(channels, channels, 3, 1, 1, groups=groups, bias=False)

        def torch_forward():
            with torch.no_grad():
                tconv(tx)

        def torch_backward():
            tconv(tx).sum().backward()
        times = [t for _, t in timed_interleaved(fns + [torch_forward, torch_backward], steps)]
        cells = [f"{f * 1e3:,.1f} / {b * 1e3:,.1f}" for f, b in zip(times[::2], times[1::2])]
        best = min(range(len(variants)), key=lambda i: times[2 * i + 1])
        cells[best] = f"**{cells[best]}**"
        rows.append(f"| {batch} x {size}x{size} x {channels} ({channels // groups}) | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    auto = resolve_grouped_conv("auto")
    header = ("| layer: batch x map x channels (group width) | " + " | ".join(variants) + " | PyTorch |",
              "|---" * (len(variants) + 2) + "|")
    return [*header, *rows, "", f"`\"auto\"` on this backend ({jax.default_backend()}) is `\"{auto}\"`, whose "
            "super-groups span max(16, group width) channels (the `split 16` column)."]


# Max-pools of the zoo at 256 px, batch 8: (map size, channels, window, stride, padding, where).
POOLS = [(128, 64, 3, 2, ((1, 1), (1, 1)), "ResNet / DenseNet stem"),
         (125, 64, 3, 2, "VALID", "InceptionV4 first reduction"),
         (256, 32, 2, 2, "SAME", "GapNet-PL first block")]


def pool_rows(steps: int) -> list[str]:
    """Max-pool forward + backward: Flax/XLA's (`select_and_scatter` gradient), `layers.max_pool`
    (same values and gradient) and PyTorch's `max_pool2d`, ms."""
    import flax.linen as nn
    import torch

    from hpa_jax.models.layers import max_pool

    rows = []
    for size, channels, window, stride, padding, where in POOLS:
        x = jax.numpy.asarray(np.random.default_rng(0).standard_normal((8, size, size, channels), dtype=np.float32))
        fns = []
        for pool in (lambda x: nn.max_pool(x, (window, window), (stride, stride), padding),
                     lambda x: max_pool(x, (window, window), (stride, stride), padding)):
            grad = jax.jit(jax.grad(lambda x, pool=pool: (pool(x) ** 2).sum()))
            fns.append(lambda grad=grad: jax.block_until_ready(grad(x)))
        tx = torch.randn(8, channels, size, size, requires_grad=True)
        torch_padding = 0 if padding in ("VALID", "SAME") else padding[0][0]

        def torch_pool():  # "SAME" at an even size and stride = window pads nothing: as VALID
            (torch.nn.functional.max_pool2d(tx, window, stride, torch_padding) ** 2).sum().backward()
        times = [t for _, t in timed_interleaved(fns + [torch_pool], steps)]
        rows.append(f"| {where}: 8 x {size}x{size} x {channels}, {window}x{window}/{stride} | "
                    + " | ".join(f"{t * 1e3:,.1f}" for t in times) + " |")
        print(rows[-1], flush=True)
    return ["| max-pool | Flax / XLA | `layers.max_pool` | PyTorch |", "|---|---|---|---|", *rows]


def run(args) -> str:
    """The section, table by table: a table left out with `--skip` keeps its text from the last
    run, and a training-step run over some encoders, shapes or dtypes replaces only those rows."""
    import torch

    from hpa_jax.models import ENCODERS

    names = args.names or [n for n in ENCODERS if n not in ("resnet18", "resnet34")]
    old = subsections(section_body(args.doc, "models"))
    tables = {}
    if "parity" not in args.skip:
        tables[PARITY] = [
            f"Measured on: {machine()}.", "",
            "Parameters with 4 input channels, 28 classes and timm's own classifier (`head=\"gap\"`), ours counted "
            "with `jax.eval_shape`. Parity: a random timm model (BatchNorm statistics randomised) converted by "
            "`hpa_jax.models.convert`, max |ours - timm| / max |timm| over the logits of 2 random images in eval "
            "mode, float32, at the smallest input timm accepts (`tests/interop/` asserts <= 1e-4).", "",
            "| encoder | params (ours) | params (timm) | parity error |", "|---|---|---|---|", *parity_rows(names)]
    if "steps" not in args.skip:
        rows = step_rows(names, args.shapes, args.dtypes, args.steps, args.grouped_conv)
        tables[STEPS] = [
            f"Last run on: {machine()}; torch {torch.__version__} with {torch.get_num_threads()} threads.", "",
            "One SGD step (forward, backward, update; BatchNorm in training mode) of the full-size encoder with "
            "timm's classifier: ours is the sharded train step on this machine's CPU device with "
            f"`model.grouped_conv={args.grouped_conv}`, timm's the same step in PyTorch (bfloat16 under "
            "`torch.autocast`; ours with `model.dtype=bfloat16`, params float32). Median of "
            f"{args.steps} steps each, ours and timm's alternating (a load change moves both alike), after one "
            "compiling and one warm-up step. The first-step column is ours: tracing, XLA's compile and one "
            "step (no persistent compilation cache). The last column is when the row ran and the 1-minute "
            "load then: PyTorch's OpenMP threads lose far more than XLA's to other work on the cores, so rows "
            "measured under load flatter ours.", "",
            "| encoder | batch x size | dtype | ours img/s | timm img/s | ours / timm | ours first step | measured |",
            "|---|---|---|---|---|---|---|---|",
            *merge_rows(table_rows(old.get(STEPS, "")), rows, key_cells=3)]
    if "layers" not in args.skip:
        tables[LAYERS] = [
            f"Measured on: {machine()}.", "",
            "One grouped 3x3 convolution, 32 groups, stride 1, float32, ms forward / forward + backward (the "
            f"gradients of input and kernel), median of {args.steps} calls of each in turn after a compiling one; "
            "the fastest of ours is bold. The shapes are SE-ResNeXt50's four stages at 256 px, batch 8 (the "
            "full-size network) and at the quickstart's width 16, 112 px, batch 32. `split C`: super-groups of "
            "max(C, group width) input channels, each a dense convolution with a block-diagonal kernel "
            "(`hpa_jax/models/layers.py`).", "", *layer_rows(args.steps)]
        tables[POOL] = [
            "XLA differentiates a max-pool into `select_and_scatter`, slow on CPUs; `layers.max_pool` computes the "
            "same gradient (the first maximum of each window takes the cotangent) from shifted slices. Forward + "
            f"backward in ms, median of {args.steps} calls each in turn:", "", *pool_rows(args.steps)]
    parts = ["## models: the encoder zoo against timm", ""]
    for heading in (PARITY, STEPS, LAYERS, POOL):
        if heading in tables:
            parts += [heading, "", *tables[heading], ""]
        elif heading in old:
            parts += [old[heading], ""]
    return "\n".join(parts)


def main(argv=None):
    area_main("models", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
