"""Benchmarks, one subcommand per area; each rewrites only its own section of docs/performance.md.

    python scripts/benchmark.py postprocess

To add an area: write `run_<area>(args) -> str` returning its Markdown (say what was measured,
on what data, and how), an `add_<area>_arguments(parser)` for its options, and one line in
BENCHMARKS. The section lands between `<!-- benchmark:<area> -->` and `<!-- /benchmark:<area> -->`;
the other sections are kept as they are and the header is rewritten with this machine's facts
(`hpa_jax.reporting.performance`). The larger areas are scripts of their own (SCRIPTS), which
this one runs as a command with the area's options.
"""

import argparse
import pathlib
import subprocess
import sys
import time

import numpy as np

from hpa_jax.reporting.performance import machine, merge_rows, publish, section_body, table_rows, timed, when
from hpa_jax.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"


# ---- postprocess: threshold search ------------------------------------------------------------

def add_postprocess_arguments(parser):
    parser.add_argument("--rows", type=int, default=31072, help="images (the Kaggle training set size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument("--sklearn_seconds", type=float, default=60, help="time budget of the scikit-learn loop")
    parser.add_argument("--check_rows", type=int, default=500, help="rows on which the loop runs to the end")


def sklearn_greedy(probs, labels, coarse, fine, max_passes=10, deadline=float("inf")):
    """The paper's greedy search as a plain loop scoring each candidate with scikit-learn's
    macro-F1: (thresholds or None if the deadline came first, macro-F1 evaluations done)."""
    from sklearn.metrics import f1_score

    evaluations = 0

    def score(thresholds):
        nonlocal evaluations
        evaluations += 1
        return f1_score(labels, probs > thresholds, average="macro", zero_division=0)

    best_t, best = None, -1.0
    for t in np.float32(coarse):
        if time.perf_counter() > deadline:
            return None, evaluations
        if (s := score(t)) > best:
            best_t, best = t, s
    thresholds = np.full(labels.shape[1], best_t, np.float32)
    for _ in range(max_passes):
        changed = False
        for c in range(labels.shape[1]):
            current = score(thresholds)
            for t in np.float32(fine):
                if time.perf_counter() > deadline:
                    return None, evaluations
                trial = thresholds.copy()
                trial[c] = t
                if (s := score(trial)) > current:
                    thresholds, current, changed = trial, s, True
        if not changed:
            break
    return thresholds, evaluations


def synthetic_scores(rows: int, seed: int = 0):
    """Labels drawn at the Kaggle class rates; probabilities sigmoid(noise + 2.5 label - 2), so
    positives score higher but overlap the negatives, as a trained model's do."""
    from hpa_jax.classes import KAGGLE_TRAIN_COUNTS

    rng = np.random.default_rng(seed)
    labels = rng.random((rows, len(KAGGLE_TRAIN_COUNTS))) < np.array(KAGGLE_TRAIN_COUNTS) / 31072
    probs = 1 / (1 + np.exp(-(rng.normal(size=labels.shape) + 2.5 * labels - 2)))
    return probs.astype(np.float32), labels


def run_postprocess(args) -> str:
    from hpa_jax.evaluation.thresholds import COARSE_GRID, FINE_GRID, THRESHOLD_METHODS, search_thresholds

    probs, labels = synthetic_scores(args.rows)
    coarse, fine = COARSE_GRID, FINE_GRID
    results = {}
    for method in THRESHOLD_METHODS:
        first, steady = timed(lambda m=method: search_thresholds(probs, labels, method=m), args.repeats)
        results[method] = (first, steady, *search_thresholds(probs, labels, method=method))
    first, steady, greedy, _ = results["greedy"]
    single = results["single"][2]
    # The loop's last pass only confirms that nothing changes (macro-F1 is a mean of per-class terms).
    passes = 1 + int((greedy != single).any())
    total = len(coarse) + passes * labels.shape[1] * (1 + len(fine))

    start = time.perf_counter()
    _, done = sklearn_greedy(probs, labels, coarse, fine, deadline=start + args.sklearn_seconds)
    per_eval = (time.perf_counter() - start) / done
    sklearn_total = per_eval * total

    check_probs, check_labels = probs[:args.check_rows], labels[:args.check_rows]
    start = time.perf_counter()
    loop_thresholds, _ = sklearn_greedy(check_probs, check_labels, coarse, fine)
    check_seconds = time.perf_counter() - start
    jax_thresholds, _ = search_thresholds(check_probs, check_labels)
    same = "identical" if np.array_equal(loop_thresholds, jax_thresholds) else "DIFFERENT"

    rows = "\n".join(f"| `{m}` | {r[1] * 1e3:.1f} ms | {r[3]:.4f} |" for m, r in results.items())
    return f"""## postprocess: threshold search

Measured on: {machine()}.

`search_thresholds(probs, labels)` on {args.rows:,} x {labels.shape[1]} synthetic scores (labels drawn at
the Kaggle class rates; probabilities sigmoid(N(0,1) + 2.5 label - 2)), default grids: {len(coarse)} coarse
values 0.1..0.9, {len(fine)} per-class values 0.02..0.97. Steady time is the median of {args.repeats}
calls after a warm-up call. The first call in a fresh process (greedy, run first) traces and compiles
for this shape, so compile time is about first minus steady; the other methods reuse what it compiled.
Scores are in-sample (fitted and scored on the same rows).

| method | steady | macro-F1 |
|---|---|---|
{rows}

Against a plain Python loop of the same greedy procedure scoring every candidate with scikit-learn's
`f1_score(average="macro", zero_division=0)`: the full search is {total:,} macro-F1 evaluations
({len(coarse)} coarse, then {passes} pass(es) x {labels.shape[1]} classes x (1 current + {len(fine)} candidates);
the last pass only confirms). The loop ran {done:,} of them in {args.sklearn_seconds:.0f} s
({per_eval * 1e3:.1f} ms each); the full search is extrapolated linearly from that.

| | time |
|---|---|
| `search_thresholds` greedy, jitted (steady) | {steady * 1e3:.1f} ms |
| compile (first call - steady) | {first - steady:.2f} s |
| scikit-learn loop, full search (extrapolated) | {sklearn_total:.0f} s |
| speed-up, steady | {sklearn_total / steady:,.0f}x |
| speed-up, including the compile of a first call | {sklearn_total / first:,.0f}x |

Check: on the first {args.check_rows:,} rows the scikit-learn loop ran to the end ({check_seconds:.1f} s) and
its thresholds are {same} to `search_thresholds`'s.
"""


QUICKSTART_VARIANTS = {
    "configs/quickstart.py as is (ACP head, 2 layer groups, warm restarts)": [],
    "with E-loss (alpha 0.99) and the hard sampler (75%)": ["--config.loss.e_alpha=0.99",
                                                           "--config.loss.hard_sample_ratio=0.75"],
}


def add_quickstart_arguments(parser):
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "benchmark_quickstart")


def quickstart_run(workdir: pathlib.Path, overrides, devices: int | None = None) -> tuple[float, dict]:
    """README's quickstart command with `overrides`: (wall seconds, its eval_metrics.json); with
    `devices`, on that many CPU devices (`JAX_NUM_CPU_DEVICES`)."""
    import json
    import os
    import shutil
    import subprocess

    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "-m", "hpa_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
               "--mode=train,evaluate,predict", *overrides]
    start = time.time()
    env = {**os.environ, **({"JAX_NUM_CPU_DEVICES": str(devices)} if devices else {})}
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.time() - start, json.loads(Workdir(workdir).eval_metrics.read_text())


def run_quickstart(args) -> str:
    """README's quickstart command, timed end to end (train, evaluate, predict; the synthetic
    dataset generated beforehand), once per variant, same seed and epochs."""
    rows = []
    for name, overrides in QUICKSTART_VARIANTS.items():
        seconds, result = quickstart_run(args.workdir / str(len(rows)), overrides)
        rows.append(f"| {name} | {seconds / 60:.1f} min | {result['val_macro_f1']:.4f} | "
                    f"{result['val_macro_f1_cross_fitted']:.4f} | {result['val_macro_f1_fitted_in_sample']:.4f} | "
                    f"{result['label_prior_macro_f1']:.4f} |")
    return "\n".join([
        "## quickstart: time and validation macro-F1", "", f"Measured on: {machine()}.", "",
        "`python -m hpa_jax.main --config=configs/quickstart.py --mode=train,evaluate,predict` (16 epochs of a",
        "width-16 ResNet18 on 1,600 synthetic 128 px fields, validated on the 400 of fold 0), wall time with the",
        "synthetic dataset already cached (generating it adds about 50-70 s) and without the pip install.",
        "Per-class thresholds cross-fitted (fitted on one half of the fold, scored on the other: honest) and",
        "in-sample (fitted on the images scored: optimistic).", "",
        "| run | wall time | macro-F1 at 0.5 | thresholds cross-fitted | thresholds in-sample | label-prior baseline |",
        "|---|---|---|---|---|---|", *rows])



def add_batchnorm_arguments(parser):
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "benchmark_batchnorm")
    parser.add_argument("--devices", type=int, default=8, help="CPU devices the batch of 32 is split over")


def run_batchnorm(args) -> str:
    """The quickstart with BatchNorm statistics over the global batch and over each device's share
    (`model.batch_norm_sync`), the batch split over `--devices` CPU devices."""
    rows = []
    for sync in ("global", "device"):
        seconds, result = quickstart_run(args.workdir / sync, [f"--config.model.batch_norm_sync={sync}"], args.devices)
        rows.append(f"| {sync} | {seconds / 60:.1f} min | {result['val_macro_f1']:.4f} | "
                    f"{result['val_macro_f1_cross_fitted']:.4f} | {result['val_macro_f1_fitted_in_sample']:.4f} |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"README's quickstart command on {args.devices} CPU devices (`JAX_NUM_CPU_DEVICES={args.devices}`: the "
        f"global batch of 32 is {32 // args.devices} images a device) with `--config.model.batch_norm_sync=global` "
        "(every BatchNorm's moments over the 32 images: one all-gather forward and one backward per layer) and "
        "`device` (each device's own moments, no collectives; running statistics averaged over the devices with "
        "the gradients, as DistributedDataParallel without SyncBatchNorm). Same seed, data and steps. Measured "
        f"on: {machine()}.", "",
        "| BatchNorm sync | wall time | macro-F1 at 0.5 | thresholds cross-fitted | thresholds in-sample |",
        "|---|---|---|---|---|", *rows])


def add_zoo_arguments(parser):
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "benchmark_zoo")
    parser.add_argument("--names", nargs="*", default=["resnet18", "resnet50", "resnet101", "seresnext50_32x4d",
                                                       "inception_v4", "densenet121", "gapnet_pl"])
    parser.add_argument("--epochs", type=int, default=None, help="train.num_epochs (default: the quickstart's 16)")


def run_zoo(args) -> str:
    """The quickstart once per encoder, changing nothing but `--config.model.name` (and the number
    of epochs when asked); rows of encoders not rerun are kept."""
    import json

    rows = []
    for name in args.names:
        overrides = [f"--config.model.name={name}"]
        if args.epochs:
            overrides.append(f"--config.train.num_epochs={args.epochs}")
        seconds, result = quickstart_run(args.workdir / name, overrides)
        epochs = json.loads(Workdir(args.workdir / name).config.read_text())["train"]["num_epochs"]
        rows.append(f"| {name} | {epochs} | {seconds / 60:.1f} min | {result['val_macro_f1']:.4f} | "
                    f"{result['val_macro_f1_fitted_in_sample']:.4f} | {result['label_prior_macro_f1']:.4f} | {when()} |")
        print(rows[-1], flush=True)
    return "\n".join([
        "## zoo: every encoder in the quickstart", "", f"Last run on: {machine()}.", "",
        "README's quickstart command with only `--config.model.name` changed: the same width 16, 112 px crops,",
        "AdamW, E-loss and hard sampler for every encoder (none of them tuned for it), 16 epochs unless the",
        "epochs column says otherwise. Wall time includes compiling and the evaluate and predict modes; the",
        "synthetic dataset was already cached. `scripts/benchmark.py zoo --names ...` reruns some rows and keeps",
        "the others; the last column says when and under what 1-minute load each row was measured (at its end).", "",
        "| encoder | epochs | wall time | macro-F1 at 0.5 | fitted thresholds (in-sample) | label-prior baseline | "
        "measured |", "|---|---|---|---|---|---|---|", *merge_rows(table_rows(section_body(args.doc, "zoo")), rows)])


def add_bfloat16_arguments(parser):
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "benchmark_bfloat16")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (wall times are then not comparable)")
    parser.add_argument("overrides", nargs="*", help="more --config.x=y for every run (after --)")


def run_bfloat16(args) -> str:
    """The quickstart trained in float32 and in bfloat16 compute (`model.dtype`), once per seed
    (`config.seed`: model init, data order and augmentation; the dataset stays the same): is
    bfloat16's score within float32's seed-to-seed spread?"""
    from concurrent.futures import ThreadPoolExecutor

    runs = [(dtype, seed) for dtype in ("float32", "bfloat16") for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda run: quickstart_run(
            args.workdir / f"{run[0]}-seed{run[1]}",
            [f"--config.model.dtype={run[0]}", f"--config.seed={run[1]}", *args.overrides]), runs))
    rows, summary = [], []
    for (dtype, seed), (seconds, result) in zip(runs, results):
        rows.append(f"| {dtype} | {seed} | {seconds / 60:.1f} min | {result['val_macro_f1']:.4f} | "
                    f"{result['val_macro_f1_fitted_in_sample']:.4f} |")
    for dtype in ("float32", "bfloat16"):
        scores = np.array([[r["val_macro_f1"], r["val_macro_f1_fitted_in_sample"]]
                           for (d, _), (_, r) in zip(runs, results) if d == dtype])
        mean, sd = scores.mean(0), scores.std(0, ddof=1) if len(scores) > 1 else np.zeros(2)
        summary.append(f"| {dtype} | {mean[0]:.4f} +- {sd[0]:.4f} | {mean[1]:.4f} +- {sd[1]:.4f} |")
    extra = f" with `{' '.join(args.overrides)}`" if args.overrides else ""
    return "\n".join([
        "## bfloat16: the quickstart trained in bfloat16 against float32", "", f"Measured on: {machine()}.", "",
        f"README's quickstart command{extra} with `--config.model.dtype=float32|bfloat16` and "
        f"`--config.seed` in {args.seeds} (model init, data order and augmentation change; the synthetic dataset "
        "does not). bfloat16 computes the encoder and head in bfloat16 with float32 parameters, optimiser, "
        "BatchNorm statistics, logits and loss. Scores: validation macro-F1 at 0.5 and with thresholds fitted "
        f"on the validation fold (in-sample); mean +- sd over seeds. {args.jobs} run(s) at once"
        + (" (wall times of runs sharing the CPU)." if args.jobs > 1 else "."), "",
        "| compute dtype | macro-F1 at 0.5 | fitted (in-sample) |", "|---|---|---|", *summary, "",
        "| compute dtype | seed | wall time | macro-F1 at 0.5 | fitted (in-sample) |", "|---|---|---|---|---|", *rows])


# name -> (add its options, run it and return its Markdown, one-line help)
BENCHMARKS = {
    "postprocess": (add_postprocess_arguments, run_postprocess, "threshold search: jitted vs a scikit-learn loop"),
    "quickstart": (add_quickstart_arguments, run_quickstart, "README's quickstart: wall time and scores"),
    "zoo": (add_zoo_arguments, run_zoo, "the quickstart once per encoder: wall time and scores"),
    "bfloat16": (add_bfloat16_arguments, run_bfloat16, "the quickstart in bfloat16 vs float32 over seeds"),
    "batchnorm": (add_batchnorm_arguments, run_batchnorm,
                  "the quickstart on 8 devices with global and per-device BatchNorm statistics"),
}
# The areas that are scripts of their own: name -> (the command after the script's path, one-line
# help); `scripts/benchmark.py AREA --help` shows their options.
SCRIPTS = {
    "models": (["benchmark_models.py"],
               "encoders: parameters, timm parity, training images/s vs timm; grouped convolutions"),
    "scale": (["benchmark_scale.py"], "the data tools at 31,072 and 105,678 images: time and peak memory"),
    "plan": (["benchmark_realsize.py", "plan"], "how long --mode=plan takes per paper config"),
    "realsize": (["benchmark_realsize.py", "realsize"],
                 "the six paper configs at full size: plan, CPU steps, GPU needs (docs/scaling.md)"),
    "input": (["benchmark_input.py"], "the input pipeline: decoding and packed reading, per thread and process"),
    "loop": (["benchmark_loop.py"], "the training loop's images/s against its bare jitted step's"),
    "collectives": (["benchmark_collectives.py"],
                    "paper configs on 8 and 16 simulated devices: plan, a step, collectives per step and their cost"),
    "cells": (["benchmark_cells.py"], "per-cell mAP of each route against the image-level floors, the "
                                      "segmentation's scores, real fields drawn (docs/cells.md)"),
    "gpu": (["benchmark_gpu.py"], "the paper's configs on a GPU: bfloat16 step rate and peak fraction, grouped conv, "
                                  "max-pool gradient, reductions, loop overhead, input"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", type=pathlib.Path, default=None,
                        help="Markdown file to update (default: docs/performance.md; realsize: docs/scaling.md; "
                             "cells: docs/cells.md)")
    areas = parser.add_subparsers(dest="area", required=True)
    for name, (add_arguments, _, help_text) in BENCHMARKS.items():
        add_arguments(areas.add_parser(name, help=help_text))
    for name, (_, help_text) in SCRIPTS.items():
        areas.add_parser(name, help=help_text, add_help=False)    # its options: the script's own
    args, rest = parser.parse_known_args(argv)
    if args.area in SCRIPTS:
        script, *command = SCRIPTS[args.area][0]
        doc = [f"--doc={args.doc}"] if args.doc else []
        sys.exit(subprocess.call([sys.executable, str(pathlib.Path(__file__).with_name(script)), *command, *rest,
                                  *doc]))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.doc = args.doc or DOC
    publish(args.doc, args.area, BENCHMARKS[args.area][1](args))


if __name__ == "__main__":
    main()
