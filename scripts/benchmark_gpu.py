"""`scripts/benchmark.py gpu`: the paper's configs on a GPU: bfloat16 step rate and peak fraction, and what feeds them.

The first command to run on a new GPU box: what the paper's six configs need from it, each part
measured in this one process. A train step is timed as one untimed call (compiling, warming up)
then `--steps` calls back to back on one batch already on the devices, each given the state the
last one returned (the step donates it), one wait at the end; images/s is the batch over that time.

1. Each paper config (`configs/resnet50.py`, `resnet101`, `senet`, `densenet`, `inception_v4`,
   `gapnet`) as shipped, its train step (`step.make_train_step`, E-loss weights from the Kaggle
   class counts) on ONE device at its per-device batch (the paper's global batch over `--devices`
   GPUs, to the nearest whole batch >= 1) and its crop, computing in bfloat16 (`model.dtype`),
   gradients summed by `psum` (what `train.reduction="auto"` takes on GPUs). Its fraction of peak
   is XLA's own FLOP count of the compiled step (`plan.program_flops`) per second of step over
   the device's dense bfloat16 peak (`PEAK_BF16`, by `device_kind`; "?" for a device not in it).
   A config that fails (out of memory on a smaller GPU, say) gets a "failed" row, and the run goes on.
2. SE-ResNeXt50 with its grouped convolutions as XLA's grouped convolution and as one
   convolution per group of groups (`model.grouped_conv` "xla" and "split"), its step as in 1.
   The one "auto" picks on this backend is 1.'s senet row, not run twice.
3. The ResNet stem's 3x3 stride-2 max-pool, forward and backward (a jitted `jax.vjp`), at the
   stem's output for ResNet50's per-device batch (256 x 256 x 64 for 512 px crops, bfloat16):
   the custom gradient (`layers.max_pool`, written for XLA:CPU) against flax's `nn.max_pool`
   differentiated by XLA (`select_and_scatter`); the median of `--steps` timed calls.
4. ResNet50 on all local devices (global batch: the per-device batch times their count), the
   gradient sum `train.reduction` "psum" (all-reduce) and "ordered" (all-gather, then a sum in
   mesh order), each with BatchNorm statistics over all devices and each device's own
   (`model.batch_norm_sync` "global" and "device"), E-loss off (as 5. runs it, so that its program
   is one of these). All four compile in this process: the "ordered" rows run without
   `--xla_gpu_deterministic_ops`, which a training run asking for "ordered" adds (set it in
   `XLA_FLAGS` to measure that).
5. The training loop's overhead (`overhead.loop_overhead`: `loop.run_epoch` against the
   bare step on the same in-memory batches, on all local devices): the quickstart's narrow
   ResNet18 at 32 px (where the host's share shows most) and ResNet50 at its per-device batch.
6. The input pipeline that has to feed the box: the packed training iterator
   (`pipeline.train_batches`, 512 px crops of 768 px synthetic fields packed into a temporary
   folder) with as many reader threads as this process may use CPUs (`pipeline.host_cpus`), and
   the copy limit (`pipeline.copy_limit`), next to the images/s that `--devices` such
   devices train ResNet50 at (1.'s rate times `--devices`): the host cores reading takes.

`--tiny` runs all of it at CPU size (width 8, 32 px crops (InceptionV4 80), 2 images per device,
one step, a small store, XLA's optimisations off to compile faster), for the test.

    python scripts/benchmark.py gpu [--configs resnet50,senet] [--steps 10] [--devices 8]
    python scripts/benchmark_gpu.py ...      # the same, run directly
"""

import gc
import math
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from hpa_jax.classes import KAGGLE_TRAIN_COUNTS
from hpa_jax.config.devices import nearest_multiple
from hpa_jax.config.shipped import load
from hpa_jax.models import create_model_from_config
from hpa_jax.models.layers import resolve_grouped_conv
from hpa_jax.reporting.performance import area_main, machine
from hpa_jax.runtime import sharding
from hpa_jax.training import optim
from hpa_jax.training.overhead import host_batches, loop_overhead, small_config
from hpa_jax.training.plan import program_flops
from hpa_jax.training.state import create_train_state
from hpa_jax.training.step import class_weights_for, make_train_step

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ("resnet50", "resnet101", "senet", "densenet", "inception_v4", "gapnet")
# Dense (no sparsity) bfloat16 tensor-core peak in FLOP/s, by what `device_kind` contains (first match).
PEAK_BF16 = ((("h100", "pcie"), 756e12), (("h100", "nvl"), 835e12), (("h100",), 989e12), (("h200",), 989e12),
             (("a100",), 312e12), (("l40s",), 362e12))
SIZE, CROP, STORE_IMAGES = 768, 512, 256   # the packed store's images, the training crops (the paper's), its count
LOOP_STEPS = 200                           # steps of the small model's loop overhead (benchmark_loop's default)
TINY = {"width": 8, "crop": 32, "inception_crop": 80, "batch": 2, "steps": 1, "size": 48, "images": 8,
        "seconds": 0.5}


def add_arguments(parser):
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated paper configs for the first table (default: {','.join(CONFIGS)})")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the warm-up (default 10)")
    parser.add_argument("--devices", type=int, default=8,
                        help="GPUs the paper's global batch is split over, which sets the per-device batch (default 8)")
    parser.add_argument("--tiny", action="store_true",
                        help="everything at CPU size (width 8, 32 px, 2 images per device, 1 step): the test's")
    parser.add_argument("--reference", default="resnet50",
                        help="the config of the max-pool, reduction, loop and input sections (default resnet50)")
    parser.add_argument("--skip_grouped", action="store_true",
                        help="leave out SE-ResNeXt50's grouped-convolution comparison (the test's, to compile less)")
    parser.add_argument("--doc", type=pathlib.Path, default=REPO / "docs" / "performance.md")


# ---- configs and steps ----------------------------------------------------------------------

def peak_flops(kind: str) -> float | None:
    """The device's dense bfloat16 peak in FLOP/s; None for a device `PEAK_BF16` does not know."""
    kind = kind.lower()
    return next((peak for names, peak in PEAK_BF16 if all(n in kind for n in names)), None)


def paper_config(name: str, args, devices: int = 1, **overrides):
    """Shipped config `name` as measured here: bfloat16, psum, its per-device batch on each of
    `devices`, CPU-sized with `--tiny`; then `overrides` {"section.key": value}."""
    config = load(name).get_config()
    # the per-device batch training runs the paper's batch at on `--devices` (`devices.fit_to_devices`)
    per_device = nearest_multiple(config.train.batch_size, args.devices) // args.devices
    config.model.dtype = "bfloat16"
    config.train.reduction = "psum"
    if args.tiny:
        config.model.width, per_device = TINY["width"], TINY["batch"]
        config.data.crop_size = TINY["inception_crop"] if config.model.name.startswith("inception") else TINY["crop"]
    return small_config(config, config.data.crop_size, per_device * devices, **overrides)


def describe(config, devices: int = 1) -> str:
    width = "" if config.model.width == 64 else f" width {config.model.width}"
    per_device = config.train.batch_size // devices
    return f"{config.model.name}{width}, {config.data.crop_size} px, {per_device}" + (
        f" x {devices}" if devices > 1 else "")


_STATES: dict = {}                          # initial train states of the models trained again: {key: state}
REUSED = ("resnet50", "seresnext50_32x4d")  # the models several sections train


def initial_state(config):
    """A fresh initial train state of `config`'s model and optimizer, a copy (the step donates
    its state); made once for the models in `REUSED` (`model.grouped_conv` and
    `model.batch_norm_sync` change how the model runs, not its params)."""
    model = create_model_from_config(config)
    fields = {k: v for k, v in config.model.to_dict().items() if k not in ("grouped_conv", "batch_norm_sync")}
    key = (repr(fields), config.optim.to_json(), config.data.crop_size)
    state = _STATES.get(key)
    if state is None:
        schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=1, num_epochs=1)
        state = create_train_state(model, optim.optimizer_from_config(config, schedule), jax.random.key(0),
                                   image_size=config.data.crop_size, in_channels=config.in_channels)
        if config.model.name in REUSED:
            _STATES[key] = state
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state.replace(apply_fn=model.apply))


def step_rate(config, mesh, steps: int) -> dict:
    """{"images_s", "step_ms", "flops" (per device and step, XLA's count)} of `config`'s train step on `mesh`."""
    state = jax.device_put(initial_state(config), sharding.replicated(mesh))
    batch = sharding.put_batch(mesh, host_batches(config, 1)[0])
    inputs = (batch["image"], batch["labels"], jax.random.key(1), batch["d4"])
    # E-loss weights (where the config has E-loss) from the Kaggle training set's class counts
    weights = class_weights_for(config, np.asarray(KAGGLE_TRAIN_COUNTS)[None])
    train_step = make_train_step(config, mesh, weights)
    compiled = getattr(train_step, "jitted", train_step).lower(state, *inputs).compile()
    state, metrics = compiled(state, *inputs)          # the warm-up
    jax.block_until_ready((state, metrics))
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, *inputs)
    jax.block_until_ready((state, metrics))
    seconds = (time.perf_counter() - start) / steps
    return {"images_s": config.train.batch_size / seconds, "step_ms": 1e3 * seconds, "flops": program_flops(compiled)}


def measured(label: str, measure) -> dict | str:
    """`measure()`'s result, or "failed: <one line>" where it raised; a progress line either way."""
    print(f"{label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result = measure()
    except Exception as error:  # noqa: BLE001 - one failed measurement (out of memory, say) leaves the others
        lines = str(error).strip().splitlines() or [""]
        result = f"failed: {type(error).__name__}: {lines[0][:200]}".replace("|", "/")
    gc.collect()
    shown = result if isinstance(result, str) else ", ".join(f"{k} {v:,.4g}" for k, v in result.items())
    print(f"  {label}: {shown} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    return result


def calls(n: int) -> str:
    return f"{n} call" + ("s" if n != 1 else "")


def cell(result, key: str = "images_s", fmt: str = ",.1f") -> str:
    return result if isinstance(result, str) else format(result[key], fmt)


# ---- the sections ----------------------------------------------------------------------------

def config_rows(args, names, mesh, peak) -> tuple[list[str], dict]:
    """Section 1: a row per paper config, and {name: step_rate's result or "failed: ..."}."""
    rows, results = [], {}
    for name in names:
        config = paper_config(name, args)
        result = results[name] = measured(f"{name}: train step on one device",
                                          lambda: step_rate(config, mesh, args.steps))
        if isinstance(result, str):
            rows.append(f"| {name} | {describe(config)} | {result} | | | |")
            continue
        achieved = result["flops"] / (result["step_ms"] / 1e3)
        fraction = f"{achieved / peak:.1%}" if peak and math.isfinite(achieved) else "?"
        rows.append(f"| {name} | {describe(config)} | {result['images_s']:,.1f} | {result['step_ms']:,.1f} | "
                    f"{achieved / 1e12:,.3g} | {fraction} |")
    return rows, results


def grouped_rows(args, mesh, results) -> list[str]:
    """Section 2: SE-ResNeXt50's step with grouped_conv "xla" and "split" (the "auto" one: section 1's)."""
    auto = resolve_grouped_conv("auto")
    rows = []
    for how in ("xla", "split"):
        config = paper_config("senet", args, **{"model.grouped_conv": how})
        if how == auto and isinstance(results.get("senet"), dict):
            result, note = results["senet"], " (`auto` on this backend: the first table's senet row)"
        else:
            result, note = measured(f"senet, grouped_conv={how}", lambda: step_rate(config, mesh, args.steps)), ""
        rows.append(f"| `{how}`{note} | {describe(config)} | {cell(result)} |")
    return rows


def pool_rows(args) -> list[str]:
    """Section 3: ms of a jitted forward and backward of the ResNet stem's max-pool, both gradients."""
    import flax.linen as nn  # noqa: PLC0415

    from hpa_jax.models.layers import max_pool  # noqa: PLC0415

    resnet50 = paper_config(args.reference, args)
    side, channels = resnet50.data.crop_size // 2, resnet50.model.width
    shape = (resnet50.train.batch_size, side, side, channels)
    keys = jax.random.split(jax.random.key(2))
    x = jax.random.normal(keys[0], shape, jnp.bfloat16)
    dy = jax.random.normal(keys[1], (shape[0], side // 2, side // 2, channels), jnp.bfloat16)
    window, strides, pads = (3, 3), (2, 2), ((1, 1), (1, 1))
    pools = {"`layers.max_pool` (custom gradient)": lambda v: max_pool(v, window, strides, pads),
             "`nn.max_pool` (XLA's `select_and_scatter`)":
                 lambda v: nn.max_pool(v, window, strides=strides, padding=pads)}

    def timing(pool):
        fn = jax.jit(lambda v, g: jax.vjp(pool, v)[1](g)[0])
        jax.block_until_ready(fn(x, dy))
        times = []
        for _ in range(max(args.steps, 1)):
            start = time.perf_counter()
            jax.block_until_ready(fn(x, dy))
            times.append(time.perf_counter() - start)
        return {"ms": 1e3 * statistics.median(times)}

    return [f"| {name} | {' x '.join(map(str, shape))} | "
            f"{cell(measured(f'max-pool, {name}', lambda: timing(pool)), 'ms', ',.3f')} |"
            for name, pool in pools.items()]


def collective_rows(args, mesh) -> tuple[list[str], dict]:
    """Section 4: ResNet50 on all local devices, each reduction with each BatchNorm sync."""
    rows, results = [], {}
    for reduction in ("psum", "ordered"):
        for sync in ("global", "device"):
            config = paper_config(args.reference, args, mesh.size, **{
                "loss.e_alpha": 0.0, "train.reduction": reduction, "model.batch_norm_sync": sync})
            result = results[reduction, sync] = measured(
                f"resnet50 on {mesh.size} devices, reduction={reduction}, batch_norm_sync={sync}",
                lambda: step_rate(config, mesh, args.steps))
            rows.append(f"| `{reduction}` | `{sync}` | {describe(config, mesh.size)} | {cell(result)} |")
    return rows, results


def loop_rows(args, devices: int) -> list[str]:
    """Section 5: the loop's overhead, the small model and ResNet50 at its per-device batch."""
    small = small_config(load("quickstart").get_config(), 32, 8 * devices, **{"model.dtype": "bfloat16", "train.reduction": "psum"})
    resnet50 = paper_config(args.reference, args, devices, **{"loss.e_alpha": 0.0})
    rows = []
    for config, steps in ((small, 1 if args.tiny else LOOP_STEPS), (resnet50, args.steps)):
        result = measured(f"{config.model.name}: loop overhead over {steps} steps",
                          lambda: loop_overhead(config, steps, repeats=1 if args.tiny else 3))
        cells = (f"{result} | |" if isinstance(result, str) else
                 f"{result['bare']:,.1f} | {result['loop']:,.1f} | {result['overhead']:.1%}")
        rows.append(f"| {describe(config, devices)} | {steps} | {cells} |")
    return rows


def input_rows(args, resnet50_rate: float | None) -> tuple[list[str], str]:
    """Section 6: rows of the packed training iterator and the copy limit, and a sentence on the
    host cores that reading for `--devices` devices takes."""
    import pandas as pd  # noqa: PLC0415

    from hpa_jax.data import pack, pipeline, synthetic  # noqa: PLC0415

    threads = pipeline.host_cpus()
    count, size, crop, seconds = ((TINY["images"], TINY["size"], TINY["crop"], TINY["seconds"]) if args.tiny
                                  else (STORE_IMAGES, SIZE, CROP, 4.0))
    batch = paper_config(args.reference, args, args.devices).train.batch_size     # the box's global batch
    with tempfile.TemporaryDirectory(prefix="hpa_gpu_store_") as tmp:
        print(f"input: {count} synthetic fields packed at {size} px ...", file=sys.stderr, flush=True)
        root = synthetic.generate(pathlib.Path(tmp) / "fields", num_train=count, num_test=1, image_size=64)
        ids = pd.read_csv(root / "train.csv", dtype=str)["Id"].to_numpy()
        store = pack.pack_folder(root / "train", ids, pathlib.Path(tmp) / "packed", size=size,
                                 num_threads=min(threads, 8), progress=False)
        source = pipeline.PackedSource(store, ids, np.zeros((len(ids), 28), np.uint8))

        def iterator():
            batches = pipeline.train_batches(source, batch_size=min(batch, count), crop_size=crop, seed=0, epoch=0,
                                             num_threads=threads, prefetch=2 * threads, num_epochs=10**6)
            return {"images_s": pipeline.reader_images_per_second(batches, seconds)[0]}

        rate = measured(f"input: the packed training iterator, {threads} threads", iterator)
        limit = measured(f"input: the copy limit, {threads} threads",
                         lambda: {"images_s": pipeline.copy_limit(source.images, crop, seconds, threads)})
    plural = "s" if threads > 1 else ""
    rows = [f"| `pipeline.train_batches`, batch {min(batch, count)}, {threads} thread{plural} | {cell(rate)} | "
            f"{cell(rate) if isinstance(rate, str) else format(rate['images_s'] / threads, ',.1f')} |",
            f"| copy limit: only the crops out of the memory map, {threads} thread{plural} | {cell(limit)} | "
            f"{cell(limit) if isinstance(limit, str) else format(limit['images_s'] / threads, ',.1f')} |"]
    if isinstance(rate, str) or not resnet50_rate:
        return rows, f"Without both the iterator's and {args.reference}'s rates, no estimate of the cores reading takes."
    need, per_core = resnet50_rate * args.devices, rate["images_s"] / threads
    cores = math.ceil(need / per_core)
    return rows, (f"{args.devices} devices like this one train {args.reference} at ~{need:,.0f} images/s; the packed iterator "
                  f"reads {per_core:,.0f} images/s per thread here, so feeding them takes ~{cores:,} of this host's "
                  f"cores ({need / rate['images_s']:.2f}x the {threads} this process may use), besides the training "
                  f"process's own work.")


# ---- the report ------------------------------------------------------------------------------

def run(args) -> str:
    start = time.perf_counter()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; expected some of {', '.join(CONFIGS)}")
    if args.tiny:
        args.steps = TINY["steps"]
    optimizations_off = jax.config.read("jax_disable_most_optimizations")
    kind, local = jax.devices()[0].device_kind, jax.local_device_count()
    peak = peak_flops(kind)
    one_device, all_devices = sharding.make_mesh(jax.local_devices()[:1]), sharding.make_mesh(jax.local_devices())
    try:
        if args.tiny:   # the numbers mean nothing at this size; compiling is most of the time
            jax.config.update("jax_disable_most_optimizations", True)
        rows, results = config_rows(args, names, one_device, peak)
        grouped = ["| left out (`--skip_grouped`) | | |"] if args.skip_grouped else grouped_rows(args, one_device,
                                                                                                   results)
        pools = pool_rows(args)
        collective, collective_results = collective_rows(args, all_devices)
        loops = loop_rows(args, local)
    finally:
        jax.config.update("jax_disable_most_optimizations", optimizations_off)
        _STATES.clear()
    resnet50_rate = (results[args.reference]["images_s"] if isinstance(results.get(args.reference), dict) else
                     collective_results["psum", "global"]["images_s"] / local
                     if isinstance(collective_results["psum", "global"], dict) else None)
    inputs, cores = input_rows(args, resnet50_rate)

    one = ("On one device the two reductions and the two BatchNorm syncs compute the same (there is "
           "nothing to sum or share): these rows differ by noise only. " if local == 1 else "")
    tiny = (", at CPU size (`--tiny`: width 8, 32 px crops (InceptionV4 80), 2 images per device, 1 step, "
            "XLA's optimisations off): a test of the script, not a measurement" if args.tiny else "")
    peak_text = (f"its dense bfloat16 peak, {peak / 1e12:,.0f} TFLOP/s" if peak else
                 "its dense bfloat16 peak (this device is not in `PEAK_BF16`: \"?\")")
    store = (TINY["images"], TINY["size"], TINY["crop"]) if args.tiny else (STORE_IMAGES, SIZE, CROP)
    nl = "\n"
    return f"""## gpu: the paper's configs on a GPU

`python scripts/benchmark.py gpu{' --tiny' if args.tiny else ''}` (`scripts/benchmark_gpu.py`) on {local} x {kind},
{machine()}{tiny}; took {(time.perf_counter() - start) / 60:.1f} min. A train step is timed over
{calls(args.steps)} after one warm-up call, on a batch already on the devices; gradients are summed
by `psum` (what `train.reduction="auto"` takes on GPUs) unless a table says otherwise.

### The paper's configs, one device

Each config's train step at its per-device batch (the paper's global batch over {args.devices} GPUs)
and crop, bfloat16 compute, on one {kind}. TFLOP/s is XLA's FLOP count of the compiled step
over the step time; the fraction of peak is that over {peak_text}.

| config | model, crop, batch | images/s | step ms | TFLOP/s | of peak |
|---|---|---|---|---|---|
{nl.join(rows)}

### SE-ResNeXt50's grouped convolutions

`model.grouped_conv`: XLA's grouped convolution, or one convolution per group of groups (`split`).

| `model.grouped_conv` | model, crop, batch | images/s |
|---|---|---|
{nl.join(grouped)}

### The ResNet stem's max-pool, forward and backward

3x3, stride 2, padding 1, bfloat16, a jitted `jax.vjp`; the median of {calls(max(args.steps, 1))}.

| max-pool | input | ms |
|---|---|---|
{nl.join(pools)}

### Gradient sum and BatchNorm statistics, {local} devices

`configs/{args.reference}.py` (E-loss off) on all {local} local devices. {one}The `ordered` rows run without
`--xla_gpu_deterministic_ops=true`, which a training run with `train.reduction="ordered"` adds on GPUs.

| `train.reduction` | `model.batch_norm_sync` | model, crop, batch x devices | images/s |
|---|---|---|---|
{nl.join(collective)}

### The training loop's overhead

`loop.run_epoch` (puts each host batch on the devices, dispatches the step, reads the metrics back)
against the bare step on the same in-memory batches, on all {local} local devices
(`overhead.loop_overhead`; `configs/{args.reference}.py` with E-loss off).

| model, crop, batch x devices | steps | bare step images/s | loop images/s | loop overhead |
|---|---|---|---|---|
{nl.join(loops)}

### The input pipeline

The packed training iterator (`pipeline.train_batches`) over {store[0]} synthetic fields packed at
{store[1]} px, {store[2]} px crops, with as many reader threads as this process may use CPUs; the copy
limit copies only each crop out of the memory map, a plain loop per thread.

| path | images/s | per thread |
|---|---|---|
{nl.join(inputs)}

{cores}
"""


def main(argv=None):
    area_main("gpu", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
