"""The paper's six configs at their real size: two areas of scripts/benchmark.py.

    python scripts/benchmark.py realsize [--configs resnet50 ...]   # writes docs/scaling.md
    python scripts/benchmark.py plan [--configs senet ...]          # its section of docs/performance.md
    python scripts/benchmark_realsize.py realsize|plan ...          # the same, run directly

`realsize`: every paper config at its real size, planned and run on this CPU. For each of the six backbone configs (ResNet50, ResNet101, SE-ResNeXt50, InceptionV4,
DenseNet121, GapNet-PL), at its real input (768 px images, 512 px crops; GapNet-PL 768) and full
width:

1. `--mode=plan` as for a GPU run of the paper's batch on 8 GPUs: 8 (simulated) devices, bfloat16,
   the global batch rounded up to a multiple of 8, the predict step with the 8 D4 TTA views: XLA's
   FLOPs and memory per device of both steps, and one core's images/s on the real images (decoded, packed).
2. On this CPU (one device, float32), on the 101 real Kaggle sample images in the Kaggle layout:
   `--mode=plan` (the measured step time), then `train` for 2 steps of 4 images
   (`train.steps_per_epoch=2`, one epoch) with its validation, `evaluate` on the held-out fold (one
   of 10) and `predict` on 4 test images, each timed as a user runs it (start-up, compiling, restoring
   included).

What a GPU run needs is derived from the plan under stated assumptions (`--gpu_tflops`, the
sustained bfloat16 rate of one GPU).

`plan`: how long `--mode=plan` takes a user, per paper config. Each of the six backbone configs
as shipped (their batch, crops, `eval.tta`, one device), planned by README's command on the 101
real Kaggle sample images (a Kaggle-layout folder of links) in a fresh workdir with an empty
compilation cache: the first plan on a new machine, start-up included. SE-ResNeXt50 is also
planned with its grouped convolutions as a GPU computes them (`model.grouped_conv=xla`; on CPUs
`auto` makes them block-diagonal dense ones, a bigger program to compile). Target (issue 13):
about a minute for any paper config.
"""

import argparse
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

from hpa_jax.classes import CHANNELS
from hpa_jax.config.shipped import load
from hpa_jax.reporting import performance
from hpa_jax.reporting.performance import machine, publish, when
from hpa_jax.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DOC = REPO / "docs" / "scaling.md"
PERFORMANCE_DOC = REPO / "docs" / "performance.md"
CONFIGS = ("resnet50", "resnet101", "senet", "inception_v4", "densenet", "gapnet")
GPUS = 8


def add_realsize_arguments(parser):
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--gpu_tflops", type=float, default=130.0,
                        help="sustained bfloat16 TFLOP/s of one GPU for the projection (default 130: an H100 at "
                             "~13%% of its 989 TFLOP/s dense peak, the ~1,000 img/s a ResNet50 at 512 px trains at)")
    parser.add_argument("--gpu_memory_gb", type=float, default=80.0, help="memory of one GPU (H100: 80)")
    parser.add_argument("--tmp", type=pathlib.Path, default=None)


def kaggle_layout(root: pathlib.Path, num_test: int = 4) -> pathlib.Path:
    """The 101 real sample images as a Kaggle-layout folder (links), with `num_test` of them as
    the test set."""
    import pandas as pd

    sample = SHARED / "hpa_kaggle_sample"
    root.mkdir(parents=True)
    os.symlink(sample / "train", root / "train")
    os.symlink(sample / "train.csv", root / "train.csv")
    (root / "test").mkdir()
    test_ids = pd.read_csv(sample / "train.csv", dtype=str)["Id"][:num_test].tolist()
    for image_id in test_ids:
        for color in CHANNELS:
            os.symlink(sample / "train" / f"{image_id}_{color}.png", root / "test" / f"{image_id}_{color}.png")
    pd.DataFrame({"Id": test_ids, "Predicted": "0"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def paper_batch(name: str) -> int:
    return int(load(name).get_config().train.batch_size)


def run_main(args: list[str], devices: int, cache: pathlib.Path) -> float:
    return performance.run_main(args, devices, cache, REPO)


def measure_config(name: str, data: pathlib.Path, tmp: pathlib.Path) -> dict:
    batch = paper_batch(name)
    gpu_batch = GPUS * math.ceil(batch / GPUS)
    base = [f"--config=configs/{name}.py", f"--config.data.dir={data}", "--config.data.num_threads=2"]
    projection = tmp / f"{name}-gpu"
    run_main([*base, f"--workdir={projection}", "--mode=plan", "--config.model.dtype=bfloat16",
              f"--config.train.batch_size={gpu_batch}", f"--config.eval.batch_size={GPUS}",
              "--config.eval.tta=(0,1,2,3,4,5,6,7)", "--config.plan.measure_steps=0", "--config.model.grouped_conv=xla",
              "--config.plan.device_memory_gb=80"], GPUS, tmp / "cache")
    cpu = tmp / f"{name}-cpu"
    cpu_args = [*base, f"--workdir={cpu}", "--config.train.batch_size=4", "--config.train.steps_per_epoch=2",
                "--config.data.num_folds=10",
                "--config.train.num_epochs=1", "--config.eval.batch_size=4", "--config.checkpoint.keep=1",
                "--config.plan.measure_batch=4", "--config.plan.measure_size=0", "--config.plan.measure_steps=2"]
    seconds = {mode: run_main([*cpu_args, f"--mode={mode}"], 1, tmp / "cache")
               for mode in ("plan", "train", "evaluate", "predict")}
    record = {"name": name, "paper_batch": batch, "gpu_batch": gpu_batch, "seconds": seconds,
              "gpu_plan": json.loads(Workdir(projection).plan.read_text()),
              "cpu_plan": json.loads(Workdir(cpu).plan.read_text()),
              "metrics": [json.loads(line) for line in Workdir(cpu).metrics.read_text().splitlines()],
              "eval": json.loads(Workdir(cpu).eval_metrics.read_text()), "when": when()}
    shutil.rmtree(projection)
    shutil.rmtree(cpu)
    return record


def gib(n: float) -> str:
    return f"{n / 2**30:.1f}"


def rows_for(record: dict, gpu_tflops: float, gpu_memory_gb: float) -> tuple[str, str, str]:
    gpu, cpu = record["gpu_plan"], record["cpu_plan"]
    train, predict, data = gpu["train_step"], gpu["predict_step"], gpu["data"]
    per_device = train["per_device_batch"]
    flops_per_image = train["flops_per_device"] / per_device
    gpu_rate = gpu_tflops * 1e12 / flops_per_image                       # images/s per GPU
    predict_rate = gpu_tflops * 1e12 / (predict["flops_per_device"] / predict["per_device_batch"])
    need = max(train["memory"]["total_bytes"], train["memory"].get("peak_bytes") or 0)
    per_core = {name: path["images_per_s_per_core"] for name, path in data.get("paths", {}).items()}
    cores = {name: math.ceil(GPUS * gpu_rate / rate) for name, rate in per_core.items() if rate}
    m = cpu["measured"]
    s = record["seconds"]
    name = f"{record['name']} ({gpu['model'].split(' ')[0]})"
    plan_row = (f"| {name} | {gpu['parameters']['count'] / 1e6:.1f} M | {record['paper_batch']} -> "
                f"{per_device} x {GPUS} | {train['flops_per_device'] / 1e12:.2f} TFLOP | "
                f"{gib(train['memory']['total_bytes'])} GiB | {predict['flops_per_device'] / 1e12:.2f} TFLOP | "
                f"{gib(max(predict['memory']['total_bytes'], predict['memory'].get('peak_bytes') or 0))} GiB |")
    cpu_row = (f"| {name} | {m['step_seconds'] / m['per_device_batch']:.2f} s | "
               f"{m['flops_per_s_per_device'] / 1e9:.0f} GFLOP/s | {s['plan']:.0f} s | {s['train']:.0f} s | "
               f"{s['evaluate']:.0f} s | {s['predict']:.0f} s | {record['eval']['num_images']} | {record['when']} |")
    gpu_row = (f"| {name} | {gib(need)} GiB of {gpu_memory_gb:.0f} ({'fits' if need <= gpu_memory_gb * 2**30 else 'does NOT fit'}) | "
               f"{gpu_rate:,.0f} | {GPUS * gpu_rate:,.0f} | {predict_rate:,.0f} | "
               f"{per_core.get('decoded', 0):.0f} | {cores.get('decoded')} | {per_core.get('packed', 0):,.0f} | "
               f"{cores.get('packed')} |")
    return plan_row, cpu_row, gpu_row


def run_realsize(args) -> str:
    if not (SHARED / "hpa_kaggle_sample").is_dir():
        raise SystemExit(f"the real sample images are not at {SHARED} (../shared/data beside the repo)")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hpa_jax_realsize-", dir=args.tmp))
    started = time.perf_counter()
    records = []
    try:
        data = kaggle_layout(tmp / "data")
        for name in args.configs:
            print(f"== {name}", file=sys.stderr, flush=True)
            records.append(measure_config(name, data, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started
    plans, cpus, gpus = zip(*(rows_for(r, args.gpu_tflops, args.gpu_memory_gb) for r in records))
    return f"""# Scaling: the paper's configs at full size

Generated by `python scripts/benchmark.py realsize` (`scripts/benchmark_realsize.py`), {total / 60:.0f} min
on {machine()}.

Each of the six backbone configs at its real input (768 px images; 512 px training crops,
GapNet-PL 768) and full width. The FLOPs and memory are XLA's compiled analysis of the very train
and predict steps training runs (`--mode=plan`), per device, for the paper's batch on {GPUS} GPUs:
{GPUS} devices (simulated on this CPU), `model.dtype=bfloat16`, the global batch rounded up to a
multiple of {GPUS} (the per-device batch below), the predict step with the 8 D4 TTA views and 1
image per device, SE-ResNeXt's grouped convolutions as a GPU runs them (`model.grouped_conv=xla`;
on CPUs `auto` computes them as block-diagonal dense ones, more FLOPs). XLA:CPU's memory figures
stand in for a GPU's: the same program, but another backend's fusion and layouts, and XLA:CPU
widens bfloat16 temporaries that a GPU keeps narrow, so they are an upper bound.

## Per step, per device (8 GPUs, bfloat16)

| config | parameters | batch -> per device x GPUs | train step | train memory | predict step (8 TTA views) | predict memory |
|---|---|---|---|---|---|---|
{chr(10).join(plans)}

## Run on this CPU (1 device, float32, the 101 real sample images)

`--mode=plan` measured the train step at 4 images per step (median of 2 after a warm-up); then
`train` ran 2 steps of 4 images (`train.steps_per_epoch=2`) and validated on the held-out fold
(one of 10 folds), `evaluate` restored the checkpoint and scored that fold, `predict` wrote a
submission for 4 test images. (Not gradient accumulation on this CPU: XLA:CPU runs convolutions inside the accumulation
loop several times slower than outside it, ~6x for GapNet-PL.) Times are wall clock as a user sees them: start-up, dataset, XLA
compilation (the first run of a program on a new machine), restore.

| config | train step per image | step rate | plan | train (2 steps) | evaluate | predict | validation images | measured |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(cpus)}

## What a GPU run of the paper's batch on {GPUS} GPUs needs

Assumptions: one GPU sustains {args.gpu_tflops:.0f} bfloat16 TFLOP/s on these steps (an H100's
dense peak is 989; {args.gpu_tflops:.0f} is what a ResNet50 at 512 px training at ~1,000 images/s
per GPU implies), with {args.gpu_memory_gb:.0f} GB of memory; images/s = that rate / the step's FLOPs per
image. Cores = {GPUS} GPUs' images/s / one core's rate on each path, measured here by the plan
with training's iterator on the real PNGs (decode, resize to 768, crop; one thread of this CPU)
and on the same images held as a packed store holds them (`python -m hpa_jax.data.pack --size=768`,
`data.packed`: a crop copied out, no decoding); docs/performance.md, `input`, has both paths in
full.

| config | train memory per GPU | train images/s per GPU | images/s on {GPUS} GPUs | predict images/s per GPU (8 TTA views) | PNG images/s per core | cores (PNG) | packed images/s per core | cores (packed) |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(gpus)}
"""


# ---- plan: how long `--mode=plan` takes -------------------------------------------------------

RUNS = (*((name, ()) for name in CONFIGS), ("senet", ("--config.model.grouped_conv=xla",)))


def add_plan_arguments(parser):
    parser.add_argument("--configs", nargs="+", default=None, choices=CONFIGS,
                        help="only these configs (default: all, and SE-ResNeXt50 with grouped_conv=xla)")
    parser.add_argument("--tmp", type=pathlib.Path, default=None)


def run_plan(args) -> str:
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)   # each plan compiles as on a new machine
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hpa_plan_", dir=args.tmp))
    rows = []
    try:
        data = kaggle_layout(tmp / "kaggle")
        for i, (name, overrides) in enumerate(RUNS):
            if args.configs and name not in args.configs:
                continue
            workdir = tmp / f"run{i}"
            seconds = run_main([f"--config=configs/{name}.py", f"--config.data.dir={data}", f"--workdir={workdir}",
                                "--mode=plan", *overrides], 1, tmp / f"cache{i}")
            plan = json.loads(Workdir(workdir).plan.read_text())
            measured = plan["measured"] or {}
            rows.append(f"| {name}{' ' + ' '.join(overrides) if overrides else ''} | {plan['model']} | "
                        f"{seconds:.0f} s | {plan['seconds']:.0f} s | {plan['train_step']['compile_seconds']:.0f} s | "
                        f"{plan['predict_step']['compile_seconds']:.0f} s | "
                        f"{measured.get('compile_seconds', float('nan')):.0f} s | {when()} |")
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        "## plan: how long `--mode=plan` takes", "", f"Last run on: {machine()}.", "",
        "README's `--mode=plan` command for each paper config as shipped, one CPU device, the 101 real Kaggle",
        "sample images as `data.dir`, a fresh workdir and an empty compilation cache (the first plan on a new",
        "machine). Wall: the whole command, Python's start-up included; plan: from the mode's start to",
        "`plan.json`. The three programs compile side by side in threads (the train step at the configured",
        "batch and the predict step for XLA's analysis only, the small train step that is timed for real), so",
        "their compile times overlap. Target: about a minute for any paper config.", "",
        "| config | model | wall | plan | train step compile | predict step compile | timed step compile | "
        "measured |", "|---|---|---|---|---|---|---|---|", *rows])


# area -> (add its options, run it and return its Markdown, the document it writes, one-line help)
AREAS = {
    "realsize": (add_realsize_arguments, run_realsize, DOC,
                 "the six paper configs at full size: plan, CPU steps, GPU needs (docs/scaling.md)"),
    "plan": (add_plan_arguments, run_plan, PERFORMANCE_DOC, "how long --mode=plan takes per paper config"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    areas = parser.add_subparsers(dest="area", required=True)
    for name, (add_arguments, _, doc, help_text) in AREAS.items():
        area = areas.add_parser(name, help=help_text)
        area.add_argument("--doc", type=pathlib.Path, default=doc, help=f"Markdown file to write (default: {doc.name})")
        add_arguments(area)
    args = parser.parse_args(argv)
    publish(args.doc, args.area, AREAS[args.area][1](args), whole=args.area == "realsize")   # scaling.md: whole


if __name__ == "__main__":
    main()
