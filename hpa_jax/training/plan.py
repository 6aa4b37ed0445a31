"""`--mode=plan`: what a config's training will cost, found without training.

Before a long GPU run, one command answers: how many parameters, how many FLOPs and how much
device memory the train and predict steps take, how many images per second the step runs at
here, and whether the input pipeline and the device memory keep up with it.

The FLOPs and memory are XLA's own analysis (`cost_analysis()`, `memory_analysis()`) of the very
programs training and prediction run: `train.make_train_step` (accumulation, hard sampler, E-loss
weights of the config's shape) and `inference.make_predict_step` (with `eval.tta`), lowered for
abstract inputs (`jax.ShapeDtypeStruct`s with the mesh's shardings, the state by
`jax.eval_shape`) and compiled, so nothing of the real batch's size is allocated. Both are *per
device*: a `shard_map` program is the program one device runs. Checked on a width-8 ResNet18,
32 px, global batch 16: one device reports 61.7 MFLOP for the train step, each of 8 devices 12.3
MFLOP (an eighth of the model's forward and backward, plus the optimiser update every device
repeats and the ordered gradient sum over the gathered copies), where a whole-program count would
be at least the one device's; the predict step, with nothing repeated, costs each of the 8 devices
an eighth of one device's (tests/test_plan.py).

Only the throughput needs real computation: a few train steps on random uint8 images. On CPUs
those run at a small per-device batch (`plan.measure_batch`) and crop (`plan.measure_size`) when
the configured ones are costly (a paper-size batch takes minutes per step there, one 512 px image
5-10 s), and the step time is scaled to the configured batch and crop by their FLOPs; on GPUs and
TPUs at the configured batch and crop themselves. Each program compiles in its own thread while
the next is lowered: lowering and compiling are most of the plan's time on a CPU.
"""

import concurrent.futures
import math
import os
import pathlib
import statistics
import time

import jax
import numpy as np

from hpa_jax.data import pipeline
from hpa_jax.data.datasets import load_dataset
from hpa_jax.errors import UserError, warn
from hpa_jax.evaluation import inference
from hpa_jax.models import compute_dtype, create_model_from_config
from hpa_jax.reporting import outputs
from hpa_jax.runtime import distributed, interconnect, sharding
from hpa_jax.training import optim
from hpa_jax.training.state import abstract_train_state
from hpa_jax.training.step import class_weights_for, make_train_step

MEMORY_FIELDS = ("argument", "output", "alias", "temp", "generated_code")


# ---- the config's shapes --------------------------------------------------------------------

def step_batches(config, mesh) -> dict:
    """Per-device train and eval batches of a config validated for the mesh's devices (which
    refuses, as training does, batches that do not split over them or over the accumulation steps)."""
    per_device = config.train.batch_size // mesh.size
    return {"train_per_device": per_device, "accumulation_steps": int(config.train.accumulation_steps),
            "eval_per_device": config.eval.batch_size // mesh.size}


def image_sizes(config, sample_shape) -> dict:
    """The train step's square side and the predict step's (height, width). Training resizes to
    `data.image_size` (0 keeps the files' size) and takes `data.crop_size` crops (the whole image
    where smaller); evaluation sees the whole image. With 0, the files' size is the first
    training example's; with no example to read, the crop size stands in (and the plan says so)."""
    if config.data.image_size:
        (height, width), where = (int(config.data.image_size),) * 2, "data.image_size"
    elif sample_shape is not None:
        (height, width), where = (int(n) for n in sample_shape[:2]), "the training images"
    else:
        (height, width), where = (int(config.data.crop_size),) * 2, "data.crop_size, no training image read"
    return {"train": min(int(config.data.crop_size), height, width), "eval": (height, width), "eval_from": where}


def abstract_batch(config, mesh, global_batch: int, height: int, width: int | None = None):
    """(uint8 images, uint8 labels) as training's batches, split over the mesh, shapes only."""
    split = sharding.batch_sharding(mesh)
    shape = (global_batch, height, width or height, config.in_channels)
    return (jax.ShapeDtypeStruct(shape, np.uint8, sharding=split),
            jax.ShapeDtypeStruct((global_batch, config.num_classes), np.uint8, sharding=split))


def abstract_key(mesh):
    key = jax.eval_shape(lambda: jax.random.key(0))
    return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))


def stand_in_class_weights(config) -> np.ndarray | None:
    """E-loss weights as training computes them (`train.class_weights_for`), from stand-in class
    counts (num_classes, ..., 1) instead of the training folds': the values do not change the
    program's cost. Distinct values, as real ones are: a constant of equal weights is one XLA
    stores differently (8 bytes less of temporaries on the tests' tiny model)."""
    stand_in_labels = np.tril(np.ones((config.num_classes, config.num_classes), np.uint8))
    return class_weights_for(config, stand_in_labels)


def model_and_optimizer(config):
    """The model and optimiser as `train.train_and_evaluate` builds them. The LR schedule has
    training's form (warm-up, cycles); one step per epoch stands in for the data's count, which
    changes only its constants."""
    schedule = optim.learning_rate_schedule(config.optim, steps_per_epoch=1, num_epochs=config.train.num_epochs)
    tx = optim.optimizer_from_config(config, schedule)
    return create_model_from_config(config), tx


# ---- XLA's analysis of a compiled program ---------------------------------------------------

def program_flops(program) -> float:
    """FLOPs of one call of the program on one device (see the module docstring), from a compiled
    program or, as an estimate before compiling, a lowered one; `cost_analysis()` is a dict, or
    a list of one per program in older jax."""
    cost = program.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def compiled_memory(compiled) -> dict:
    """Per-device bytes of the compiled program: arguments, outputs, outputs aliasing donated
    arguments (the train step's state), temporaries and generated code; `total` is what they
    occupy together, `peak` XLA's own peak where the backend reports one (XLA:CPU's leaves
    the temporaries out)."""
    stats = compiled.memory_analysis()
    memory = {f"{name}_bytes": int(getattr(stats, f"{name}_size_in_bytes", 0) or 0) for name in MEMORY_FIELDS}
    memory["total_bytes"] = (memory["argument_bytes"] + memory["output_bytes"] - memory["alias_bytes"]
                             + memory["temp_bytes"] + memory["generated_code_bytes"])
    memory["peak_bytes"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return memory


def analysed(compiled) -> dict:
    return {"flops_per_device": program_flops(compiled), "memory": compiled_memory(compiled)}


def needed_bytes(memory: dict) -> int:
    return max(memory["total_bytes"], memory["peak_bytes"])


# XLA:CPU options for a program the plan analyses but never runs: LLVM generates its code without
# optimising it. The HLO passes and the buffer assignment, which the FLOPs and memory are read
# from, are unchanged: the same numbers to the byte for ResNet50's and SE-ResNeXt50's train steps
# at their paper batches, compiled 2-3x faster (SE-ResNeXt50's: 50 s instead of 111 s on two cores).
ANALYSIS_ONLY = {"xla_backend_optimization_level": 0}


def compiler_options(platform: str, runs: bool) -> dict:
    return ANALYSIS_ONLY if platform == "cpu" and not runs else {}


def timed_compile(lowered, options: dict):
    """(compiled program, seconds compiling took)."""
    start = time.perf_counter()
    compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    return compiled, time.perf_counter() - start


def tree_bytes(tree) -> int:
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def parameter_summary(state) -> dict:
    """Counts and bytes of the (abstract) training state's parts."""
    params, opt_state = tree_bytes(state.params), tree_bytes(state.opt_state)
    return {"count": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))), "params_bytes": params,
            "batch_stats_bytes": tree_bytes(state.batch_stats), "opt_state_bytes": opt_state,
            "params_and_opt_state_bytes": params + opt_state}


# ---- the machine ----------------------------------------------------------------------------

def host_memory_bytes() -> int | None:
    """The host's RAM (what CPU devices share)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def device_memory_limit(config, device, local_devices: int) -> tuple[int | None, str]:
    """(bytes one device can hold, where that figure comes from): `plan.device_memory_gb` when
    set (GiB of a target device, e.g. 80 for an H100, for a GPU plan made elsewhere), else the
    device's own `bytes_limit` (on GPUs what JAX may allocate, by default 75% of the memory), else
    for CPU devices an equal share of the host's RAM."""
    target = float(config.plan.device_memory_gb)
    if target > 0:
        return int(target * 2**30), f"plan.device_memory_gb={target:g}"
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - backends without memory statistics raise their own errors
        limit = None
    if limit:
        return int(limit), f"{device.device_kind} bytes_limit"
    ram = host_memory_bytes()
    if device.platform == "cpu" and ram:
        return ram // local_devices, "host RAM" if local_devices == 1 else f"host RAM / {local_devices} CPU devices"
    return None, "unknown"


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# ---- measured throughput ----------------------------------------------------------------------

# On CPUs, timed steps run at the configured batch when all of them (and the warm-up) take at most
# this many FLOPs: about 15 s at the 12-14 GFLOP/s a train step reaches on two cores, about what
# compiling a second program for a smaller batch takes (the quickstart's: 16 s).
CPU_MEASURE_FLOPS = 2e11


def measured_shape(config, per_device: int, accumulation: int, size: int, platform: str,
                   step_flops: float) -> tuple[int, int]:
    """(per-device batch, crop side) the timed steps run at: the configured ones on GPUs and TPUs,
    and on CPUs where their steps are cheap (`CPU_MEASURE_FLOPS`); otherwise `plan.measure_batch`
    images, rounded up to a multiple of the accumulation steps (the same program, smaller
    micro-batches), of at most `plan.measure_size` px: a paper config's single 512 px image
    takes 5-10 s a step on two cores, a quarter of that at 256 px."""
    steps = int(config.plan.measure_steps) + 1
    if platform != "cpu" or steps * step_flops <= CPU_MEASURE_FLOPS:
        return per_device, size
    wanted = max(int(config.plan.measure_batch), 1)
    smaller = int(config.plan.measure_size or size)
    return min(-(-wanted // accumulation) * accumulation, per_device), min(smaller, size)


def zero_state(abstract_state):
    """The training state as zeros, placed as `abstract_state` says. A dense step's time does not
    depend on the values (the quickstart's steps take the same time from its initial state), and
    running the initialiser would first compile it: 8 s for the quickstart's model on two cores."""
    return jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype), a.sharding), abstract_state)


def time_train_steps(compiled, config, mesh, abstract_state, per_device: int, size: int, steps: int) -> float:
    """Seconds per train step of `compiled` on random uint8 images: one warm-up step, then the
    median of `steps` steps (robust to a burst of other work on a shared machine)."""
    state = zero_state(abstract_state)
    rng = np.random.default_rng(config.seed)
    local = per_device * len(mesh.local_devices)
    images = rng.integers(0, 256, (local, size, size, config.in_channels), dtype=np.uint8)
    labels = (rng.random((local, config.num_classes)) < 0.1).astype(np.uint8)
    images, labels = sharding.put_batch(mesh, (images, labels))
    # made by a program, replicated: a key made on one device cannot be put on other processes' devices
    key = jax.jit(lambda: jax.random.key(config.seed), out_shardings=sharding.replicated(mesh))()
    distributed.barrier("plan: measuring the train step")   # its collectives need every process there
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, images, labels, key)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def throughput(step_seconds: float, measured: dict, configured: dict, local_devices: int) -> dict:
    """Seconds per step and images per second per device and on this host at the configured
    batch and crop, from timed steps of the `measured` ones; each is {"per_device_batch",
    "image_size", "flops"} (per device). Where they differ the time is scaled by the FLOPs: the
    measured step's FLOP rate carried over to the configured step (a step's time grows about
    linearly with its batch and its pixels; XLA:CPU's rate at 256 px was within a third of its rate at 512 px)."""
    rate = measured["flops"] / step_seconds
    scaled = (measured["per_device_batch"], measured["image_size"]) != (configured["per_device_batch"],
                                                                         configured["image_size"])
    at_config = configured["flops"] / rate if scaled else step_seconds
    per_device_rate = configured["per_device_batch"] / at_config
    return {"per_device_batch": measured["per_device_batch"], "image_size": measured["image_size"],
            "step_seconds": step_seconds, "scaled": scaled, "step_seconds_at_config_batch": at_config,
            "images_per_s_per_device": per_device_rate, "images_per_s_host": per_device_rate * local_devices,
            "flops_per_s_per_device": rate}


# ---- the collectives --------------------------------------------------------------------------

def collective_summary(config, compiled, mesh, measured: dict | None) -> dict:
    """The train step's collectives per step, read from its compiled program
    (`runtime.interconnect`): count and bytes each device sends, by kind, for the reduction and
    BatchNorm sync it runs with, and the time they take over the links `plan.*` describe (an upper
    bound: no overlap with compute), next to the step's compute where it was measured."""
    found = interconnect.summary(interconnect.collectives(compiled.as_text(), mesh.size))
    p = config.plan
    link = interconnect.link_seconds(found["bytes_sent"], found["count"], mesh.size,
                                     devices_per_node=int(p.devices_per_node), node_link_gb_s=float(p.node_link_gb_s),
                                     network_gb_s=float(p.network_gb_s), latency_us=float(p.collective_latency_us))
    return {"reduction": sharding.resolve_reduction(config.train.reduction, mesh.devices.flat[0].platform),
            "batch_norm_sync": config.model.batch_norm_sync, "devices": mesh.size, **found,
            "link": {**link, "latency_us": float(p.collective_latency_us), "devices_per_node": int(p.devices_per_node)},
            "compute_seconds": measured["step_seconds_at_config_batch"] if measured else None}


def collective_lines(c: dict) -> list[str]:
    if not c["count"]:
        return [f"  collectives    none ({c['devices']} device)"]
    kinds = ", ".join(f"{v['count']} {kind}" for kind, v in c["kinds"].items())
    link = c["link"]
    where = "between nodes" if link["link"] == "network" else "within a node"
    compute = f"; the step's compute here {c['compute_seconds'] * 1e3:.3g} ms" if c["compute_seconds"] else ""
    return [f"  collectives    {kinds} per step ({c['reduction']} gradient reduction, {c['batch_norm_sync']} "
            f"BatchNorm): each device sends {human_bytes(c['bytes_sent'])}",
            f"                 {link['seconds'] * 1e3:.3g} ms at {link['gb_s']:g} GB/s {where} and "
            f"{link['latency_us']:g} us a collective{compute}"]


# ---- the data path ----------------------------------------------------------------------------

DATA_SECONDS = 2.0   # each path's iterator is timed this long after its first batch


def training_examples(config, packed: bool | None = None):
    """`plan.data_samples` training examples drawn at random, as a source of the kind training
    reads (decoded image files, or the packed store `data.packed`; `packed=False` forces the
    files). Near-duplicate handling is left out: it chooses which images train, not how fast one
    is read. A `UserError` when the data cannot be loaded (no data.dir, unreadable files...)."""
    data_config = config.copy_and_resolve_references()
    data_config.data.duplicates = "none"
    if packed is False:
        data_config.data.packed = None
    dataset = distributed.primary_first(load_dataset, data_config)
    train_idx, _ = dataset.split(config.data.fold)
    rows = np.random.default_rng(config.seed).permutation(train_idx)[:max(int(config.plan.data_samples), 1)]
    return dataset.train_source(rows, data_config.data)


def open_data(config) -> tuple:
    """(training examples, the first one's image shape, None), or (None, None, why not)."""
    try:
        source = training_examples(config)
        return source, source.image(0).shape, None
    except UserError as e:
        return None, None, str(e)


class InMemorySource:
    """Decoded images held in memory, read as a packed store reads them (a copy of each crop):
    the packed path's rate, measured without writing a store."""

    def __init__(self, source):
        self.labels = source.labels
        self.images = np.stack([source.image(i) for i in range(len(source))])

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


def per_core_rate(config, source) -> float:
    """Images/s of one reader thread in the training process: `pipeline.train_batches`, the
    iterator training reads, over `source`'s examples again and again (`DATA_SECONDS`)."""
    batch = max(1, min(int(config.train.batch_size) // jax.process_count(), len(source)))
    batches = pipeline.train_batches(source, batch_size=batch, crop_size=int(config.data.crop_size), seed=config.seed,
                                     epoch=0, num_threads=1, prefetch=1, num_epochs=10**6)
    return pipeline.reader_images_per_second(batches, DATA_SECONDS)[0]


def data_summary(config, source, error: str | None, measured: dict | None) -> dict:
    """Each path's images/s per core (decoded files and a packed store: one reader thread of the
    real iterator) and the cores this host's measured step rate needs on it; the readers training
    would start (`pipeline.readers`); or why the data path could not be timed."""
    if source is None:
        return {"error": error}
    packed = isinstance(source, pipeline.PackedSource)
    paths = {}
    try:
        paths["packed" if packed else "decoded"] = per_core_rate(config, source)
        if packed:
            paths["decoded"] = per_core_rate(config, training_examples(config, packed=False))
        else:
            paths["packed"] = per_core_rate(config, InMemorySource(source))
    except UserError as e:
        if not paths:
            return {"error": str(e)}
    host_rate = measured["images_per_s_host"] if measured else None
    threads, workers, _ = pipeline.readers(config.data, source)
    return {"source": f"packed store {config.data.packed}" if packed else f"{config.data.format} files",
            "configured": "packed" if packed else "decoded", "samples": len(source),
            "paths": {name: {"images_per_s_per_core": rate, "cores_needed": cores_needed(host_rate, rate)}
                      for name, rate in paths.items()},
            "num_threads": threads, "num_workers": workers}


def cores_needed(host_rate: float | None, core_rate: float | None) -> int | None:
    if not host_rate or not core_rate:
        return None
    return math.ceil(host_rate / core_rate)


def pack_command(config) -> str:
    """The commands that pack the training images as `config` reads them and train from the store."""
    data_dir = config.data.dir or "D"
    size = f" --size={config.data.image_size}" if config.data.image_size else ""
    fmt = f" --format={config.data.format}" if config.data.format != "png" else ""
    return (f"python -m hpa_jax.data.pack --data_dir={data_dir} --out={data_dir}/packed/train{size}{fmt}, then "
            f"--config.data.packed={data_dir}/packed")


# ---- warnings and the summary -----------------------------------------------------------------

def plan_warnings(result: dict, config) -> list[str]:
    """What would stop or slow the run: a step that does not fit the device memory, too few
    reader workers or CPUs for the step's rate, a data path that could not be timed."""
    found = []
    limit, where = result["devices"]["memory_limit_bytes"], result["devices"]["memory_limit_source"]
    computing = compute_dtype(config.model.dtype, result["devices"].get("platform"))
    bfloat16 = " or use model.dtype=bfloat16" if computing == np.float32 else ""
    advice = {"train_step": f"lower train.batch_size, raise train.accumulation_steps{bfloat16}",
              "predict_step": f"lower eval.batch_size{bfloat16}"}
    for name, fix in advice.items():
        need = needed_bytes(result[name]["memory"])
        if limit and need > limit:
            found.append(f"the {name.replace('_', ' ')} needs {human_bytes(need)} per device, more than the "
                         f"{human_bytes(limit)} it has ({where}): {fix}")
    data = result["data"]
    if "error" in data:
        found.append(f"data path not timed: {data['error']}")
    configured = data.get("paths", {}).get(data.get("configured"), {})
    needed = configured.get("cores_needed")
    if needed is not None:
        rate = (f"the train step takes {result['measured']['images_per_s_host']:.3g} images/s on this host and one "
                f"core reads {configured['images_per_s_per_core']:.3g} from {data['source']}, so {needed} cores "
                f"are needed")
        readers = data["num_threads"] * max(data["num_workers"], 1)
        cpus = result["devices"]["host_cpus"]
        if needed > cpus and data["configured"] == "decoded":
            found.append(f"decoding cannot keep up: {rate}, but this host has {cpus} CPUs; pack the images once "
                         f"and train from the store: {pack_command(config)}")
        elif needed > cpus:
            found.append(f"the input pipeline would starve the devices: {rate}, but this host has {cpus} CPUs; "
                         f"read fewer pixels (data.image_size)")
        elif needed > readers:
            found.append(f"the input pipeline would starve the devices: {rate}, but the readers are "
                         f"data.num_threads={data['num_threads']} x data.num_workers={data['num_workers']}; raise "
                         f"them or set both to auto")
    return found


def human_flops(n: float) -> str:
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if n >= scale:
            return f"{n / scale:,.3g} {unit}"
    return f"{n:,.0f} FLOP"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def memory_line(memory: dict) -> str:
    in_place = f" ({human_bytes(memory['alias_bytes'])} in place of the donated state)" if memory["alias_bytes"] else ""
    peak = f", XLA's peak {human_bytes(memory['peak_bytes'])}" if memory["peak_bytes"] > memory["total_bytes"] else ""
    return (f"memory {human_bytes(memory['total_bytes'])} per device: arguments {human_bytes(memory['argument_bytes'])}"
            f", outputs {human_bytes(memory['output_bytes'])}{in_place}, temporaries "
            f"{human_bytes(memory['temp_bytes'])}, code {human_bytes(memory['generated_code_bytes'])}{peak}")


def size_text(size) -> str:
    height, width = (size, size) if isinstance(size, int) else size
    return f"{height} px" if height == width else f"{height}x{width} px"


def fits_text(result: dict) -> str:
    d = result["devices"]
    if not d["memory_limit_bytes"]:
        return "unknown"
    verdicts = [f"the {name.replace('_', ' ')} {'fits' if result[name]['fits'] else 'does NOT fit'}"
                for name in ("train_step", "predict_step")]
    return f"{human_bytes(d['memory_limit_bytes'])} per device ({d['memory_limit_source']}): {', '.join(verdicts)}"


def summary_lines(result: dict) -> list[str]:
    """The plan as a person reads it."""
    d, p, t, e = result["devices"], result["parameters"], result["train_step"], result["predict_step"]
    micro = f" in {t['accumulation_steps']} micro-batches" if t["accumulation_steps"] > 1 else ""
    guessed = f" (size from {e['image_size_from']})" if e["image_size_from"].startswith("data.crop_size") else ""
    lines = [
        f"plan: {result['model']}, {d['mesh']} {d['platform']} device(s) in the mesh, {d['local']} on this host "
        f"({d['host_cpus']} CPUs, load {d['load_1min']})",
        f"  parameters     {p['count']:,} = {human_bytes(p['params_bytes'])}; with optimizer state "
        f"{human_bytes(p['params_and_opt_state_bytes'])}",
        f"  train step     {t['per_device_batch']} x {size_text(t['image_size'])} per device{micro} (global batch "
        f"{t['global_batch']}): {human_flops(t['flops_per_device'])} per device, compiled in "
        f"{t['compile_seconds']:.1f} s",
        f"                 {memory_line(t['memory'])}",
        f"  predict step   {e['per_device_batch']} x {size_text(e['image_size'])} per device{guessed}, "
        f"{e['tta_views']} TTA view(s): {human_flops(e['flops_per_device'])} per device, compiled in "
        f"{e['compile_seconds']:.1f} s",
        f"                 {memory_line(e['memory'])}",
        f"  device memory  {fits_text(result)}",
    ]
    m = result["measured"]
    if m is None:
        lines.append(f"  measured       not run ({result['measured_note']})")
    else:
        configured = (f"at {t['per_device_batch']} x {size_text(t['image_size'])} per device "
                      f"{m['step_seconds_at_config_batch']:.3g} s per step (scaled by FLOPs): " if m["scaled"] else "")
        lines += [f"  measured       train step at {m['per_device_batch']} x {size_text(m['image_size'])} per device: "
                  f"{m['step_seconds']:.3g} s "
                  f"(median of {m['steps']} after a warm-up), {human_flops(m['flops_per_s_per_device'])}/s per device",
                  f"                 {configured}{m['images_per_s_per_device']:.3g} images/s per device, "
                  f"{m['images_per_s_host']:.3g} images/s on this host"]
    lines += collective_lines(result["collectives"])
    data = result["data"]
    if "error" in data:
        lines.append("  data path      not timed (see the warning)")
        return lines
    host = f" for this host's {m['images_per_s_host']:.3g} images/s" if m else ""
    processes = f" in each of {data['num_workers']} reader processes" if data["num_workers"] else ""
    lines.append(f"  data path      {data['source']}, read by {data['num_threads']} thread(s){processes} (training's "
                 f"iterator over {data['samples']} examples, timed on one core):")
    for name, path in data["paths"].items():
        rate = path["images_per_s_per_core"]
        need = f", {path['cores_needed']} core(s) needed{host}" if path["cores_needed"] is not None else ""
        mark = " (configured)" if name == data["configured"] else ""
        lines.append(f"                 {name:8s}{rate:>7,.{0 if rate >= 100 else 1}f} images/s per core{need}{mark}")
    return lines


# ---- the mode -----------------------------------------------------------------------------------

def compile_programs(config, mesh, model, abstract_state, sizes: dict, batches: dict) -> tuple[dict, dict]:
    """The train step at the configured batch and the predict step, and on CPUs where that
    step is costly the train step at the measured shape (`measured_shape`); name -> (compiled,
    seconds), and the measured {"per_device_batch", "image_size"}. Programs that will not run
    compile for analysis only (`ANALYSIS_ONLY`); each compiles while the next is lowered."""
    platform, per_device, size = mesh.local_devices[0].platform, batches["train_per_device"], sizes["train"]
    train_step = make_train_step(config, mesh, stand_in_class_weights(config))
    predict_step = inference.make_predict_step(model, config, mesh)

    def lower_train(per_device_batch, side):
        return train_step.jitted.lower(abstract_state, *abstract_batch(config, mesh, per_device_batch * mesh.size,
                                                                       side), abstract_key(mesh))

    train_lowered = lower_train(per_device, size)
    measured_batch, measured_size = measured_shape(config, per_device, batches["accumulation_steps"], size, platform,
                                                   program_flops(train_lowered))
    measuring = int(config.plan.measure_steps) > 0
    separate = measuring and (measured_batch, measured_size) != (per_device, size)
    variables = {"params": abstract_state.params, "batch_stats": abstract_state.batch_stats}
    eval_images = abstract_batch(config, mesh, config.eval.batch_size, *sizes["eval"])[0]
    # Each program compiles in its own thread (XLA's C++, without the GIL) while the next is
    # lowered (Python, with it).
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {"train": pool.submit(timed_compile, train_lowered,
                                        compiler_options(platform, measuring and not separate))}
        if separate:
            futures["measure"] = pool.submit(timed_compile, lower_train(measured_batch, measured_size), {})
        futures["predict"] = pool.submit(timed_compile, predict_step.jitted.lower(variables, eval_images),
                                         compiler_options(platform, False))
        compiled = {name: future.result() for name, future in futures.items()}
    return compiled, {"per_device_batch": measured_batch, "image_size": measured_size}


def plan(config, workdir) -> dict:
    """Prints the plan of `config`'s training and writes `workdir/plan.json`; trains nothing.
    `config` is validated for the devices first (`hpa_jax.config.validate`, as `hpa_jax.main` does),
    which refuses the batches training would refuse. Problems found (memory, input pipeline, no
    data to time) are warnings: the rest of the plan is still made."""
    started = time.perf_counter()
    workdir = pathlib.Path(workdir)
    mesh = sharding.make_mesh()
    batches = step_batches(config, mesh)
    device, local_devices = mesh.local_devices[0], len(mesh.local_devices)
    limit, limit_source = device_memory_limit(config, device, local_devices)
    source, sample_shape, data_error = open_data(config)
    sizes = image_sizes(config, sample_shape)
    model, tx = model_and_optimizer(config)
    abstract_state = abstract_train_state(model, tx, config.in_channels, mesh)
    size, per_device = sizes["train"], batches["train_per_device"]

    compiled, measured_at = compile_programs(config, mesh, model, abstract_state, sizes, batches)

    result = {
        "model": f"{config.model.name} ({config.model.head.pool} head, "
                 f"{compute_dtype(config.model.dtype, device.platform).name})",
        "devices": {"platform": device.platform, "kind": device.device_kind, "mesh": mesh.size,
                    "local": local_devices, "processes": jax.process_count(), "host_cpus": pipeline.host_cpus(),
                    "load_1min": load_average(), "memory_limit_bytes": limit, "memory_limit_source": limit_source},
        "parameters": parameter_summary(abstract_state),
        "train_step": {"global_batch": int(config.train.batch_size), "per_device_batch": per_device,
                       "accumulation_steps": batches["accumulation_steps"], "image_size": size,
                       **analysed(compiled["train"][0]), "compile_seconds": compiled["train"][1]},
        "predict_step": {"global_batch": int(config.eval.batch_size), "per_device_batch": batches["eval_per_device"],
                         "image_size": list(sizes["eval"]), "image_size_from": sizes["eval_from"],
                         "tta_views": len(tuple(config.eval.tta)),
                         **analysed(compiled["predict"][0]), "compile_seconds": compiled["predict"][1]},
    }
    for name in ("train_step", "predict_step"):
        result[name]["fits"] = None if limit is None else needed_bytes(result[name]["memory"]) <= limit
    result["measured"], result["measured_note"] = measure(config, mesh, abstract_state, measured_at,
                                                          compiled.get("measure", compiled["train"]), result)
    result["collectives"] = collective_summary(config, compiled["train"][0], mesh, result["measured"])
    result["data"] = data_summary(config, source, data_error, result["measured"])
    result["warnings"] = plan_warnings(result, config)
    result["seconds"] = round(time.perf_counter() - started, 2)
    for line in summary_lines(result):
        print(line)
    for message in result["warnings"]:
        warn(message)
    workdir.mkdir(parents=True, exist_ok=True)
    path = outputs.write_json(workdir / "plan.json", result)
    print(f"plan ({result['seconds']:.0f} s) -> {path}")
    return result


def measure(config, mesh, abstract_state, shape: dict, program, result: dict):
    """(throughput record or None, why not measured): timed train steps of `program`, compiled
    for `shape` ({"per_device_batch", "image_size"}), unless `plan.measure_steps` is 0 or the
    step would not fit the device at the configured batch."""
    steps = int(config.plan.measure_steps)
    if steps <= 0:
        return None, "plan.measure_steps=0"
    train_plan = result["train_step"]
    configured = {"per_device_batch": train_plan["per_device_batch"], "image_size": train_plan["image_size"],
                  "flops": train_plan["flops_per_device"]}
    same = (shape["per_device_batch"], shape["image_size"]) == (configured["per_device_batch"],
                                                                configured["image_size"])
    if same and train_plan["fits"] is False:
        return None, "the train step does not fit the device"
    compiled, compile_seconds = program
    start = time.perf_counter()
    seconds = time_train_steps(compiled, config, mesh, abstract_state, shape["per_device_batch"],
                               shape["image_size"], steps)
    record = throughput(seconds, {**shape, "flops": program_flops(compiled)}, configured, len(mesh.local_devices))
    return {**record, "steps": steps, "compile_seconds": compile_seconds,
            "seconds_measuring": time.perf_counter() - start}, ""
