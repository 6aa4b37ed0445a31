"""The paper's ablation rerun on the embedded synthetic benchmark: what each technique adds,
with its spread over seeds. A benchmark, never a test.

    python scripts/ablation.py run                        # every row, 3 seeds; resumable
    python scripts/ablation.py run --rows=d --seeds=0     # one row's training, one seed
    python scripts/ablation.py run --probes=e_alpha_0.9   # another setting of a technique, on the full recipe
    python scripts/ablation.py curve --rows=g,a --epochs_factor=2   # rows trained longer; 3 seeds
    python scripts/ablation.py report                     # docs/ablation.md and its PNGs

Rows, cumulative as in the paper's tables: (a) timm's head (GAP + FC), BCE, one LR, plain cosine;
(b) + ACP and buffering layers; (c) + hard sampler; (d) + E-loss with focal; (e) + layer-group
LRs, warm restarts, oversampling; (f) + D4 TTA; (g) + per-class thresholds. Off the cumulative
path, the full recipe (g) with each technique removed alone. Rows differing only in TTA or
thresholds share their training runs: 11 trainings per seed.

Each (training, seed) is one workdir `WORKDIR/<training>/seed<k>` (checkpoints; git-ignored):
trained by the package's own `train.train_and_evaluate` (the seed varies the initialisation and the
data order; the synthetic dataset and its folds, `data.fold_seed`, stay fixed), then its last
checkpoint's validation probabilities are written without and with D4 TTA. What the report needs
is kept in the repo, in `RESULTS/<training>/seed<k>` (docs/ablation_runs: `val_probs.npz` in
float16, `config.json`, `metrics.jsonl`, and `done.json` last), so a finished run survives a new
checkout and is never redone, while an interrupted one resumes from its checkpoint if the workdir
is still there. The report reads only RESULTS, so it can be rerun at will and from any subset of
finished runs.

Every run computes on one thread (XLA's CPU thread pool changes the order of sums, so a run's
numbers depend on the thread count): the figures are the same whether the runs go one after the
other or side by side. `run --workers=N` (default: one per core) starts N processes, each pinned to
a core and taking every N-th run left (`--shard=i/N`); on two cores that trains ~1.5x more runs an
hour than one process using both cores.

Every run is scored three ways on the validation fold: macro-F1 at 0.5; with per-class
thresholds cross-fitted (fitted on one stratified half of the fold, scored on the other, both
ways: honest); and per-class F1 averaged over Kaggle's 14 most frequent classes ("common") and
the other 14 ("rare"). The last checkpoint is scored rather than a "best" one, so that no
selection criterion favours a recipe; how the criteria would have chosen is analysed separately
from each epoch's validation record (`metrics.jsonl`).
"""

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from bench_util import REPO, machine

SEEDS = (0, 1, 2)
RESULTS = REPO / "docs" / "ablation_runs"
KEPT = ("config.json", "metrics.jsonl")
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# The benchmark's size: 33 trainings in ~1 h 40 min on two cores (two runs side by side, ~4.5 min each).
# Learning curves (`curve`, cross-fitted macro-F1): the baseline (row a, seed 0) has levelled off
# by the last epoch (0.498 at epoch 45 of a 90-epoch run, 0.512 at its end; its 45-epoch run ends
# at 0.515); the full recipe (g, 3 seeds) rises at the 9-epoch cycle ends to 0.394 at epoch 45,
# then levels at about 0.417 from epoch 54 to 90: the benchmark leaves it ~0.02 short of its level,
# less than the effects the report's decisions rest on, which hold at 90 epochs (docs/ablation.md).
# The quickstart's width 16 costs 2.5x per image, its 128 px fields 4x more again.
SCALE = {
    "data.synthetic.num_train": 3000, "data.synthetic.num_test": 1, "data.synthetic.image_size": 64,
    "data.crop_size": 64, "data.fold_seed": 0, "model.width": 8, "train.batch_size": 32,
    "train.num_epochs": 45, "optim.cycle_epochs": 9, "checkpoint.keep": 1,
}

# Each technique: the config values with it and without it. "tta" and "thresholds" act after
# training (no config values), the others on training.
TECHNIQUES = {
    "acp_head": ({"model.head.pool": "acp", "model.head.layers": ((128, 0.25),)},
                 {"model.head.pool": "gap", "model.head.layers": ()}),
    "hard_sampler": ({"loss.hard_sample_ratio": 0.75}, {"loss.hard_sample_ratio": 1.0}),
    "e_loss_focal": ({"loss.name": "bce+focal", "loss.e_alpha": 0.99}, {"loss.name": "bce", "loss.e_alpha": 0.0}),
    "group_lrs": ({"optim.group_lr_multipliers": (0.5, 1.0)}, {"optim.group_lr_multipliers": (1.0,)}),
    "warm_restarts": ({"optim.schedule": "cosine_restarts"}, {"optim.schedule": "cosine"}),
    "oversampling": ({"data.oversample_max_factor": 3}, {"data.oversample_max_factor": 1}),
    "tta": None,
    "thresholds": None,
}
NAMES = {"acp_head": "ACP and buffering layers", "hard_sampler": "hard sampler", "e_loss_focal": "E-loss with focal",
         "group_lrs": "layer-group LRs", "warm_restarts": "warm restarts", "oversampling": "oversampling",
         "tta": "D4 TTA", "thresholds": "per-class thresholds"}
CUMULATIVE = (
    ("a", "timm's head (GAP + FC), BCE, one LR, plain cosine", ()),
    ("b", "+ ACP and buffering layers", ("acp_head",)),
    ("c", "+ hard sampler", ("hard_sampler",)),
    ("d", "+ E-loss with focal", ("e_loss_focal",)),
    ("e", "+ layer-group LRs, warm restarts, oversampling", ("group_lrs", "warm_restarts", "oversampling")),
    ("f", "+ D4 TTA", ("tta",)),
    ("g", "+ per-class thresholds", ("thresholds",)),
)


# Other settings of the techniques the paper tunes by hand, each a variant of the full recipe (g)
# run only when asked (`run --probes`): where a technique hurts, does another setting help?
PROBES = {
    "acp_no_buffer": {"model.head.layers": ()},
    "buffer_no_dropout": {"model.head.layers": ((128, 0.0),)},
    "e_alpha_0.9": {"loss.e_alpha": 0.9},
    "e_alpha_0.999": {"loss.e_alpha": 0.999},
    "e_raw_weights": {"loss.normalize_weights": False},
    "e_weights_bce": {"loss.name": "bce"},
    "hard_ratio_0.5": {"loss.hard_sample_ratio": 0.5},
    "hard_ratio_0.9": {"loss.hard_sample_ratio": 0.9},
    "oversample_x2": {"data.oversample_max_factor": 2},
    "restarts_15_epochs": {"optim.cycle_epochs": 15},
}


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    label: str
    techniques: frozenset

    @property
    def training(self) -> str:
        """The name of the training run this row scores: its training techniques, in TECHNIQUES order."""
        used = [t for t in TECHNIQUES if t in self.techniques and TECHNIQUES[t] is not None]
        return "+".join(used) or "baseline"


def rows() -> list[Row]:
    """The cumulative rows a-g, then the full recipe without each technique ("g-<technique>")."""
    found, have = [], frozenset()
    for name, label, added in CUMULATIVE:
        have = have | set(added)
        found.append(Row(name, label, have))
    full = found[-1].techniques
    found += [Row(f"g-{t}", f"g without {NAMES[t]}", full - {t}) for t in TECHNIQUES]
    return found


def full_training() -> str:
    return rows()[len(CUMULATIVE) - 1].training


def run_config(training: str, seed: int, scale: dict | None = None):
    """The quickstart's config at the benchmark's scale with the training's techniques on; a
    training "probe-NAME" is the full recipe with PROBES[NAME] on top."""
    from hpa_jax.configs import quickstart

    config = quickstart.get_config()
    probe = PROBES[training[len("probe-"):]] if training.startswith("probe-") else {}
    training = full_training() if probe else training
    used = set() if training == "baseline" else set(training.split("+"))
    values = dict(SCALE if scale is None else scale)
    for technique, pair in TECHNIQUES.items():
        if pair is not None:
            values.update(pair[0] if technique in used else pair[1])
    values.update(probe)
    values["seed"] = seed
    for key, value in values.items():
        *parents, field = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[field] = value
    return config


# ---- running ------------------------------------------------------------------------------------

def run_one(config, run_dir: pathlib.Path, kept: pathlib.Path) -> dict:
    """Trains (or resumes) one run in `run_dir`, then keeps in `kept` its last checkpoint's
    validation probabilities without and with D4 TTA, its config and epoch records, and
    `done.json` last."""
    from hpa_jax.evaluation import inference
    from hpa_jax.reporting import outputs
    from hpa_jax.training import loop as train
    from hpa_jax.data.datasets import load_dataset

    start = time.time()
    train.train_and_evaluate(config, run_dir)
    config = inference.training_config(config, run_dir)
    model, mesh, variables, step = inference.restore_variables(config, run_dir, "latest")
    dataset = load_dataset(config)
    train_idx, val_idx = dataset.split(config.data.fold)
    probs = {}
    for name, views in (("plain", (0,)), ("d4", tuple(range(8)))):
        view_config = config.copy_and_resolve_references()
        view_config.eval.tta = views
        predict_step = inference.make_predict_step(model, view_config, mesh)
        probs[name] = inference.predict_probs(predict_step, variables, mesh, view_config,
                                              dataset.train_source(val_idx, view_config.data), desc=f"validate {name}")
    keep(run_dir, kept, ids=dataset.train_ids[val_idx], labels=dataset.train_labels[val_idx],
         train_counts=dataset.train_labels[train_idx].sum(0), probs=probs)
    record = {"step": int(step), "seconds": round(time.time() - start, 1), "when": time.strftime("%Y-%m-%d")}
    outputs.write_json(kept / "done.json", record)
    return record


def keep(run_dir: pathlib.Path, kept: pathlib.Path, ids, labels, train_counts, probs: dict) -> None:
    """The run's files the report reads, in the repo (~100 KB a run): probabilities in float16,
    whose steps (at most 2^-11 below 1) are far finer than the 0.01 grid thresholds are fitted on."""
    copy_kept(run_dir, kept)
    np.savez_compressed(kept / "val_probs.npz", ids=ids, labels=labels.astype(np.uint8), train_counts=train_counts,
                        **{k: np.asarray(v, np.float16) for k, v in probs.items()})


def copy_kept(run_dir: pathlib.Path, kept: pathlib.Path) -> None:
    import shutil

    kept.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copyfile(run_dir / name, kept / name)


def pending(args) -> list[tuple[str, int]]:
    """(training, seed) of the asked-for runs without `done.json` in RESULTS; for `curve`,
    ("curve/<row>_x<factor>", seed) of the longer runs not kept to their last epoch."""
    if args.command == "curve":
        todo = [(curve_name(row, args.epochs_factor), s) for s in args.seeds for row in args.rows or ["g"]]
        return [(name, s) for name, s in todo if not curve_done(args.results / name / f"seed{s}")]
    wanted = [r for r in rows() if not args.rows or r.name in args.rows]
    trainings = list(dict.fromkeys(r.training for r in wanted)) if args.rows or not args.probes else []
    trainings += [f"probe-{name}" for name in args.probes or ()]
    todo = [(t, s) for s in args.seeds for t in trainings]
    return [(t, s) for t, s in todo if not (args.results / t / f"seed{s}" / "done.json").is_file()]


def run(args) -> None:
    """One worker: its shard of the runs left (`run` or `curve`), one after the other, on one core."""
    os.sched_setaffinity(0, {args.shard[0] % os.cpu_count()})
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax  # as hpa_jax.main does: the seeds of a training share their compiled programs
        from hpa_jax.data.datasets import default_cache_dir
        jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "xla"))
    index, count = args.shard
    left = pending(args)[index::count]
    print(f"ablation: worker {index} of {count}: {len(left)} runs")
    started = time.time()
    for i, (name, seed) in enumerate(left, 1):
        run_dir, kept = args.workdir / name / f"seed{seed}", args.results / name / f"seed{seed}"
        print(f"[{i}/{len(left)}] {name} seed {seed} -> {run_dir}")
        if args.command == "curve":
            seconds = run_curve(name, seed, args.epochs_factor, run_dir, kept)
        else:
            seconds = run_one(run_config(name, seed), run_dir, kept)["seconds"]
        elapsed = time.time() - started
        print(f"[{i}/{len(left)}] {name} seed {seed}: {seconds:.0f} s; {elapsed / 60:.0f} min so far, "
              f"about {elapsed / i * (len(left) - i) / 60:.0f} min to go")


def run_workers(args, argv: list[str]) -> None:
    """`--workers` processes, each running its shard; a bar counts finished runs (logs: WORKDIR)."""
    from tqdm import tqdm

    total = len(pending(args))
    print(f"ablation: {total} runs to do -> {args.results}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    workers = []
    for i in range(args.workers):
        log = args.workdir / f"worker{i}.log"
        command = [sys.executable, __file__, *argv, f"--shard={i}/{args.workers}"]
        workers.append(subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT))
    print(f"ablation: {args.workers} workers; their logs: {args.workdir}/worker<i>.log")
    with tqdm(total=total, desc="ablation runs", unit="run", smoothing=0) as bar:   # rate: the mean
        while any(w.poll() is None for w in workers):
            time.sleep(10)
            bar.update(total - len(pending(args)) - bar.n)
        bar.update(total - len(pending(args)) - bar.n)
    failed = [i for i, w in enumerate(workers) if w.returncode]
    if failed:
        raise SystemExit(f"ablation: worker(s) {failed} failed; see {args.workdir}/worker<i>.log")


def shard(text: str) -> tuple[int, int]:
    index, count = (int(x) for x in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard={text}: want i/n with 0 <= i < n")
    return index, count


def curve_name(row: str, factor: float) -> str:
    return f"curve/{row}_x{factor:g}"


def epoch_records(run_dir: pathlib.Path) -> list[dict]:
    """A run's `metrics.jsonl`, one record per epoch ([] where there is none)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def curve_done(kept: pathlib.Path) -> bool:
    """A `curve` run is kept once its epoch records reach the configured last epoch."""
    records = epoch_records(kept)
    return bool(records) and len(records) >= json.loads((kept / "config.json").read_text())["train"]["num_epochs"]


def run_curve(name: str, seed: int, factor: float, run_dir: pathlib.Path, kept: pathlib.Path) -> float:
    """A row's training (`--rows`, default g: the full recipe) at `factor` times the benchmark's
    training length (the same cycle length: more warm-restart cycles): does the validation score
    still climb after the benchmark's last epoch, and do the rows' differences hold?"""
    from hpa_jax.training import loop as train

    start = time.time()
    row = name.split("/")[-1].rsplit("_x", 1)[0]
    training = next(r.training for r in rows() if r.name == row)
    scale = dict(SCALE)
    scale["train.num_epochs"] = int(SCALE["train.num_epochs"] * factor)
    train.train_and_evaluate(run_config(training, seed, scale), run_dir)
    copy_kept(run_dir, kept)
    return time.time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "curve", "report"))
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "ablation",
                        help="checkpoints (git-ignored)")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS,
                        help="what the report reads, kept in the repo")
    parser.add_argument("--shard", type=shard, default=None, help="run, curve: i/n, every n-th run left from the i-th")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="run, curve: processes side by side")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=None, help="comma-separated row names")
    parser.add_argument("--probes", type=lambda s: s.split(","), default=None,
                        help=f"comma-separated variants of the full recipe: {', '.join(PROBES)} (alone: only these)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=list(SEEDS),
                        help="run and curve: comma-separated seeds")
    parser.add_argument("--epochs_factor", type=float, default=1.2, help="curve: training length x this")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):   # before jax loads; workers inherit it
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()
    if args.command == "report":
        import ablation_report
        ablation_report.write(args.results, rows(), machine())
    elif args.shard is None:
        run_workers(args, argv)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
