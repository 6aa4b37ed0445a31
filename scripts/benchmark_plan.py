"""`scripts/benchmark.py plan`: how long `--mode=plan` takes a user, per paper config.

Each of the six backbone configs as shipped (their batch, crops, `eval.tta`, one device), planned
by README's command on the 101 real Kaggle sample images (a Kaggle-layout folder of links) in a
fresh workdir with an empty compilation cache: the first plan on a new machine, start-up included.
SE-ResNeXt50 is also planned with its grouped convolutions as a GPU computes them
(`model.grouped_conv=xla`; on CPUs `auto` makes them block-diagonal dense ones, a bigger program
to compile). Target (issue 13): about a minute for any paper config.
"""

import json
import os
import pathlib
import shutil
import tempfile

from bench_util import machine, when

import benchmark_realsize

RUNS = (*((name, ()) for name in benchmark_realsize.CONFIGS), ("senet", ("--config.model.grouped_conv=xla",)))


def add_arguments(parser):
    parser.add_argument("--configs", nargs="+", default=None, choices=benchmark_realsize.CONFIGS,
                        help="only these configs (default: all, and SE-ResNeXt50 with grouped_conv=xla)")
    parser.add_argument("--tmp", type=pathlib.Path, default=None)


def run(args) -> str:
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)   # each plan compiles as on a new machine
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hpa_plan_", dir=args.tmp))
    rows = []
    try:
        data = benchmark_realsize.kaggle_layout(tmp / "kaggle")
        for i, (name, overrides) in enumerate(RUNS):
            if args.configs and name not in args.configs:
                continue
            workdir = tmp / f"run{i}"
            seconds = benchmark_realsize.run_main([f"--config=configs/{name}.py", f"--config.data.dir={data}",
                                                   f"--workdir={workdir}", "--mode=plan", *overrides],
                                                  1, tmp / f"cache{i}")
            plan = json.loads((workdir / "plan.json").read_text())
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
