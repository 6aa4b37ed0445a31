"""The paper's ablation rerun on the embedded synthetic benchmark: what each technique adds,
with its spread over seeds. A benchmark, never a test.

    python scripts/ablation.py run                        # every row, 3 seeds; resumable
    python scripts/ablation.py run --rows=d --seeds=0     # one row's training, one seed
    python scripts/ablation.py run --probes=e_alpha_0.9   # another setting of a technique, on the full recipe
    python scripts/ablation.py curve --rows=g,a --epochs_factor=2   # rows trained longer; 3 seeds
    python scripts/ablation.py swa                        # checkpoint averaging on the full recipe; 3 seeds
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

Checkpoint averaging (`swa`): the full recipe (g) trained again keeping its last
`checkpoint.keep` = 9 epoch checkpoints (one warm-restart cycle; nothing else changes), then
`--mode=swa`'s averages (`hpa_jax.training.averaging`: uniform mean of the weights, BatchNorm
statistics recomputed over one pass of the training images) scored as row g is, against the same
runs' best single checkpoint (by `checkpoint.best_metric`, chosen on the validation fold it is
scored on) and last one (`AVERAGED_CHECKPOINTS`).

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
import re
import subprocess
import sys
import time

import numpy as np

from hpa_jax.reporting.performance import machine, read_or_empty
from hpa_jax.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
RESULTS = REPO / "docs" / "ablation_runs"
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


# Checkpoint averaging (`swa`): the full recipe keeping its last 9 epochs (one cycle at SCALE), and
# what it scores: name -> (how it is restored, what it is called in the report). "last" is the
# row-g checkpoint (its probabilities are kept as every run's are); the averages are `--mode=swa`
# with these settings; "average_of_statistics" is the last cycle's average with the checkpoints'
# BatchNorm statistics averaged too, not recomputed.
AVERAGED_TRAINING = "swa"
AVERAGED_CONFIG = {"checkpoint.keep": 9}
AVERAGED_CHECKPOINTS = {
    "best": ("best", "best single checkpoint (by `checkpoint.best_metric`, chosen on this fold)"),
    "last": ("latest", "last checkpoint (row g's)"),
    "swa_last_3": (("last_epochs", 3), "average of the last 3 epochs"),
    "swa_last_9": (("last_epochs", 9), "average of the last 9 epochs (the last cycle)"),
    "swa_cycle_ends": (("cycle_ends", 5), "average of the 5 cycle ends (epochs 9, 18, ..., 45)"),
    "average_of_statistics": (("last_epochs", 9), "average of the last 9 epochs, BatchNorm statistics averaged "
                                                  "with the weights (not recomputed)"),
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
    training "probe-NAME" is the full recipe with PROBES[NAME] on top, AVERAGED_TRAINING the full
    recipe with AVERAGED_CONFIG."""
    from hpa_jax.config.shipped import load
    quickstart = load("quickstart")

    config = quickstart.get_config()
    probe = PROBES[training[len("probe-"):]] if training.startswith("probe-") else {}
    probe = AVERAGED_CONFIG if training == AVERAGED_TRAINING else probe
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
    from hpa_jax.config.upgrade import training_config
    from hpa_jax.evaluation import inference
    from hpa_jax.reporting import outputs
    from hpa_jax.training import loop as train
    from hpa_jax.data.datasets import load_dataset

    start = time.time()
    train.train_and_evaluate(config, run_dir)
    config = training_config(config, run_dir)
    model, mesh, variables, step = inference.restore_variables(config, run_dir, "latest")
    dataset = load_dataset(config)
    train_idx, val_idx = dataset.split(config.data.fold)
    probs = validation_probs(config, model, mesh, variables, dataset.train_source(val_idx, config.data))
    keep(run_dir, kept, ids=dataset.train_ids[val_idx], labels=dataset.train_labels[val_idx],
         train_counts=dataset.train_labels[train_idx].sum(0), probs=probs)
    record = {"step": int(step), "seconds": round(time.time() - start, 1), "when": time.strftime("%Y-%m-%d")}
    outputs.write_json(kept / "done.json", record)
    return record


def validation_probs(config, model, mesh, variables, source, prefix: str = "") -> dict:
    """The validation fold's probabilities without ("plain") and with D4 TTA ("d4"), each name
    after `prefix`."""
    from hpa_jax.evaluation import inference

    probs = {}
    for name, views in (("plain", (0,)), ("d4", tuple(range(8)))):
        view_config = config.copy_and_resolve_references()
        view_config.eval.tta = views
        predict_step = inference.make_predict_step(model, view_config, mesh)
        probs[prefix + name] = inference.predict_probs(predict_step, variables, mesh, view_config, source,
                                                       desc=f"validate {prefix}{name}")
    return probs


def run_averaged(seed: int, run_dir: pathlib.Path, kept: pathlib.Path) -> float:
    """AVERAGED_TRAINING: trains (or resumes) the full recipe keeping its last epochs, then keeps
    the validation probabilities of every AVERAGED_CHECKPOINTS entry ("last" unprefixed, as every
    run's; the others as "<name>_plain", "<name>_d4"), with `done.json` last."""
    from hpa_jax.config.upgrade import training_config
    from hpa_jax.data.datasets import load_dataset
    from hpa_jax.evaluation import inference
    from hpa_jax.reporting import outputs
    from hpa_jax.runtime import checkpoint
    from hpa_jax.training import averaging, loop as train

    start = time.time()
    config = run_config(AVERAGED_TRAINING, seed)
    train.train_and_evaluate(config, run_dir)
    config = training_config(config, run_dir)
    dataset = load_dataset(config)
    train_idx, val_idx = dataset.split(config.data.fold)
    source = dataset.train_source(val_idx, config.data)
    probs, steps = {}, {}
    for name, (which, _) in AVERAGED_CHECKPOINTS.items():
        if name == "average_of_statistics":    # averaging.average without its BatchNorm pass
            model, mesh, _, _ = inference.restore_variables(config, run_dir, "latest")
            average, n = which
            averaged = [r["step"] for r in averaging.averaged_epochs(averaging.epoch_records(Workdir(run_dir)),
                                                                     average, n)]
            variables = averaging.average_checkpoints(checkpoint.checkpoint_manager(run_dir, must_exist=True),
                                                      averaged, inference.variables_target(model, config, mesh))
            step = averaged[-1]
        elif isinstance(which, tuple):
            config.swa.average, config.swa.num_checkpoints = which
            averaging.average(config, run_dir)
            model, mesh, variables, step = inference.restore_variables(config, run_dir, "swa")
        else:
            model, mesh, variables, step = inference.restore_variables(config, run_dir, which)
        steps[name] = int(step)
        probs.update(validation_probs(config, model, mesh, variables, source, "" if name == "last" else f"{name}_"))
    keep(run_dir, kept, ids=dataset.train_ids[val_idx], labels=dataset.train_labels[val_idx],
         train_counts=dataset.train_labels[train_idx].sum(0), probs=probs)
    outputs.write_json(kept / "done.json", {"step": steps["last"], "steps": steps,
                                            "seconds": round(time.time() - start, 1), "when": time.strftime("%Y-%m-%d"),
                                            "machine": machine()})
    return time.time() - start


def keep(run_dir: pathlib.Path, kept: pathlib.Path, ids, labels, train_counts, probs: dict) -> None:
    """The run's files the report reads, in the repo (~100 KB a run): probabilities in float16,
    whose steps (at most 2^-11 below 1) are far finer than the 0.01 grid thresholds are fitted on."""
    copy_kept(run_dir, kept)
    np.savez_compressed(Workdir(kept).val_probs, ids=ids, labels=labels.astype(np.uint8), train_counts=train_counts,
                        **{k: np.asarray(v, np.float16) for k, v in probs.items()})


def copy_kept(run_dir: pathlib.Path, kept: pathlib.Path) -> None:
    import shutil

    kept.mkdir(parents=True, exist_ok=True)
    run = Workdir(run_dir)
    for path in (run.config, run.metrics):
        shutil.copyfile(path, kept / path.name)


def pending(args) -> list[tuple[str, int]]:
    """(training, seed) of the asked-for runs without `done.json` in RESULTS; for `curve`,
    ("curve/<row>_x<factor>", seed) of the longer runs not kept to their last epoch; for `swa`,
    (AVERAGED_TRAINING, seed)."""
    if args.command == "curve":
        todo = [(curve_name(row, args.epochs_factor), s) for s in args.seeds for row in args.rows or ["g"]]
        return [(name, s) for name, s in todo if not curve_done(args.results / name / f"seed{s}")]
    if args.command == "swa":
        return [(AVERAGED_TRAINING, s) for s in args.seeds
                if not (args.results / AVERAGED_TRAINING / f"seed{s}" / "done.json").is_file()]
    wanted = [r for r in rows() if not args.rows or r.name in args.rows]
    trainings = list(dict.fromkeys(r.training for r in wanted)) if args.rows or not args.probes else []
    trainings += [f"probe-{name}" for name in args.probes or ()]
    todo = [(t, s) for s in args.seeds for t in trainings]
    return [(t, s) for t, s in todo if not (args.results / t / f"seed{s}" / "done.json").is_file()]


def run(args) -> None:
    """One worker: its shard of the runs left (`run`, `curve` or `swa`), one after the other, on one core."""
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
        elif args.command == "swa":
            seconds = run_averaged(seed, run_dir, kept)
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
    path = Workdir(run_dir).metrics
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def curve_done(kept: pathlib.Path) -> bool:
    """A `curve` run is kept once its epoch records reach the configured last epoch."""
    records = epoch_records(kept)
    return bool(records) and len(records) >= json.loads(Workdir(kept).config.read_text())["train"]["num_epochs"]


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


# ---- report: docs/ablation.md and its figures from the finished runs' files kept in RESULTS ------
# (`val_probs.npz`, `config.json`, `metrics.jsonl`, `done.json`); nothing is trained or predicted
# here. The hand-written analysis between `<!-- notes -->` and `<!-- /notes -->` in docs/ablation.md
# is kept as it is when the tables are regenerated.

DOC = REPO / "docs" / "ablation.md"
FIGURE = REPO / "docs" / "ablation.png"
CURVES = REPO / "docs" / "ablation_curves.png"
CLASSES = REPO / "docs" / "ablation_classes.png"
SELECTION = ("val_macro_f1", "val_macro_f1_fitted", "val_loss", "last")


def common_classes() -> np.ndarray:
    """Kaggle's 14 most frequent classes (bool mask): "common"; the other 14 are "rare"."""
    from hpa_jax.classes import KAGGLE_TRAIN_COUNTS

    counts = np.asarray(KAGGLE_TRAIN_COUNTS)
    mask = np.zeros(len(counts), bool)
    mask[np.argsort(-counts, kind="stable")[:len(counts) // 2]] = True
    return mask


def finished_runs(results: pathlib.Path) -> dict:
    """(training, seed) -> the run's folder, for every run with `done.json`."""
    found = {}
    for done in sorted(results.glob("*/seed*/done.json")):
        run_dir = done.parent
        found[(run_dir.parent.name, int(run_dir.name[len("seed"):]))] = run_dir
    return found


def score_run(run_dir: pathlib.Path, tta: bool, thresholds: bool, seed: int, checkpoint: str = "last") -> dict:
    """A row's figures for one run: macro-F1 at 0.5 and cross-fitted over the fold's stratified
    halves, the headline (cross-fitted if the row fits thresholds, else at 0.5), and the
    headline's per-class F1 averaged over common and rare classes; of the run's last checkpoint,
    or of another kept `checkpoint` (AVERAGED_CHECKPOINTS)."""
    from hpa_jax.config import upgrade
    from hpa_jax.evaluation import metrics, validation
    from hpa_jax.evaluation.thresholds import cross_fitted_predictions, search_thresholds
    from hpa_jax.data.datasets import fold_seed

    saved = np.load(Workdir(run_dir).val_probs)
    views = "d4" if tta else "plain"
    labels = saved["labels"].astype(bool)
    probs = saved[views if checkpoint == "last" else f"{checkpoint}_{views}"].astype(np.float32)
    config = upgrade.read(Workdir(run_dir).config)
    halves = validation.validation_halves(labels, fold_seed(config))
    at_half = probs > 0.5
    crossed = cross_fitted_predictions(probs, labels, halves)
    headline = crossed if thresholds else at_half
    per_class = np.asarray(metrics.per_class_f1(labels, headline))
    common = common_classes()
    _, best_single = search_thresholds(probs, labels, method="single")
    return {"headline": float(per_class.mean()), "at_0.5": float(metrics.macro_f1(labels, at_half)),
            "cross_fitted": float(metrics.macro_f1(labels, crossed)),
            "common": float(per_class[common].mean()), "rare": float(per_class[~common].mean()),
            "mean_prob_over_label_rate": float(probs.mean() / max(labels.mean(), 1e-12)),
            "best_single_threshold_f1": float(best_single), "seed": seed, "per_class": per_class.tolist()}


def mean_sd(values) -> str:
    values = np.asarray(values, float)
    if not len(values):
        return "-"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.4f} ± {sd:.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def paired_difference(scores: dict, row: str, reference: str, key: str = "headline") -> list[float]:
    """Per seed (the seeds both rows have): row's `key` figure minus the reference's."""
    seeds = sorted(set(scores[row]) & set(scores[reference]))
    return [scores[row][s][key] - scores[reference][s][key] for s in seeds]


def signed(values) -> str:
    values = np.asarray(values, float)
    if not len(values):
        return "-"
    sd = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else ""
    return f"{values.mean():+.4f}{sd}"


def training_rows(rows) -> dict:
    """training -> the first row that scores it, which names it in the tables."""
    names = {}
    for row in rows:
        names.setdefault(row.training, row.name)
    return names


def selection_table(runs: dict, trainings: dict) -> list[str]:
    """For each training, which validation figure picks the best epoch, and the cross-fitted
    macro-F1 (no TTA) of the epoch each picks, mean over seeds."""
    lines = ["| training (row) | " + " | ".join("last epoch" if c == "last" else f"best by {c}" for c in SELECTION) + " |",
             "|---|" + "---|" * len(SELECTION)]
    for training in trainings:
        picked = {c: [] for c in SELECTION}
        for (name, _), run_dir in runs.items():
            if name != training:
                continue
            records = epoch_records(run_dir)
            if not records or "val_macro_f1_cross_fitted" not in records[0]:
                continue
            for criterion in SELECTION:
                if criterion == "last":
                    chosen = records[-1]
                elif criterion == "val_loss":
                    chosen = min(records, key=lambda r: (r["val_loss"], -r["epoch"]))
                else:
                    chosen = max(records, key=lambda r: (r[criterion], r["epoch"]))
                picked[criterion].append(chosen["val_macro_f1_cross_fitted"])
        if any(picked.values()):
            lines.append(f"| {trainings[training]} | " + " | ".join(mean_sd(picked[c]) for c in SELECTION) + " |")
    return lines


def pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only
    import matplotlib.pyplot as plt
    return plt


def save(plt, fig, path: pathlib.Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(rows, scores: dict, path: pathlib.Path) -> None:
    plt = pyplot()

    cumulative = [r for r in rows if "-" not in r.name and scores.get(r.name)]
    removed = [r for r in rows if "-" in r.name and scores.get(r.name)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for key, color, shift, label in (("at_0.5", "tab:blue", -0.1, "at 0.5"),
                                     ("cross_fitted", "tab:purple", 0.1, "cross-fitted thresholds")):
        for i, row in enumerate(cumulative):
            values = [v[key] for v in scores[row.name].values()]
            left.scatter([i + shift] * len(values), values, color="tab:gray", s=10, zorder=2)
            left.errorbar(i + shift, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0, fmt="o",
                          color=color, capsize=4, zorder=3, label=label if i == 0 else None)
    left.set_xticks(range(len(cumulative)), [r.name for r in cumulative])
    left.set(title="Cumulative rows: mean ± sd over seeds (dots)", ylabel="validation macro-F1")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    full = next((r for r in rows if r.name == "g"), None)
    for i, row in enumerate(removed):
        diffs = paired_difference(scores, row.name, full.name) if full and scores.get(full.name) else []
        if diffs:
            right.barh(i, np.mean(diffs), xerr=np.std(diffs, ddof=1) if len(diffs) > 1 else 0, capsize=4,
                       color="tab:red" if np.mean(diffs) < 0 else "tab:green")
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(range(len(removed)), [r.label.replace("g without ", "without ") for r in removed])
    right.set(title="Full recipe (g) without one technique", xlabel="change in macro-F1 (below 0: the technique helps)")
    right.grid(alpha=0.3)
    save(plt, fig, path)


def draw_classes(rows, scores: dict, path: pathlib.Path) -> bool:
    """Per-class F1 (headline predictions, mean over seeds) of the cumulative rows against each
    class's frequency: which classes a technique helps or hurts."""
    plt = pyplot()

    from hpa_jax.classes import KAGGLE_TRAIN_COUNTS

    shown = [r for r in rows if "-" not in r.name and scores.get(r.name)]
    if not shown:
        return False
    counts = np.asarray(KAGGLE_TRAIN_COUNTS, float)
    order = np.argsort(-counts)
    fig, ax = plt.subplots(figsize=(12, 4.2))
    for row in shown:
        per_class = np.mean([v["per_class"] for v in scores[row.name].values()], axis=0)
        ax.plot(range(len(order)), per_class[order], "o-", ms=3, label=f"{row.name}: {row.label}")
    ax.set_xticks(range(len(order)), [f"{c} ({int(counts[c])})" for c in order], rotation=90, fontsize=7)
    ax.set(xlabel="class (Kaggle training count), most frequent first", ylabel="F1 (mean over seeds)",
           title="Per-class F1 of the cumulative rows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(plt, fig, path)
    return True


def curve_runs(results: pathlib.Path) -> list[tuple[str, str, float, int, list]]:
    """The kept `curve` runs: (row, "<row> x<factor>", factor, seed, epoch records), by name and seed."""
    found = []
    for seed_dir in sorted((results / "curve").glob("*_x*/seed*")):
        if records := epoch_records(seed_dir):
            row, factor = seed_dir.parent.name.rsplit("_x", 1)
            found.append((row, f"{row} x{factor}", float(factor), int(seed_dir.name[len("seed"):]), records))
    return found


def draw_curves(curves: list, runs: dict, curve_rows: dict, path: pathlib.Path) -> bool:
    """Validation macro-F1 per epoch: the longer `curve` runs (`curve_runs`; solid) and the
    benchmark's own runs (dashed) of the rows in `curve_rows` (row -> training), one colour per row."""
    plt = pyplot()

    colours = dict(zip(curve_rows, ("tab:orange", "tab:blue", "tab:green", "tab:red")))
    series = [(f"row {row}: {records[-1]['epoch']} epochs, seed {seed}", row, records, True)
              for row, _, _, seed, records in curves if row in curve_rows]
    # the benchmark's own runs, dashed: a longer run of the same seed follows the same epochs
    # exactly up to the benchmark's last one (same schedule, deterministic)
    for row, training in curve_rows.items():
        series += [(f"row {row}: benchmark, seed {seed}", row, epoch_records(run_dir), False)
                   for (name, seed), run_dir in sorted(runs.items()) if name == training]
    series = [s for s in series if s[2]]
    if not series:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for label, row, records, solid in series:
        epochs = [r["epoch"] for r in records]
        style = dict(color=colours[row], linestyle="-" if solid else "--", linewidth=1.6 if solid else 0.8,
                     alpha=1.0 if solid else 0.7)
        if all("val_macro_f1_cross_fitted" in r for r in records):
            left.plot(epochs, [r["val_macro_f1_cross_fitted"] for r in records], label=label, **style)
        right.plot(epochs, [r["val_macro_f1"] for r in records], **style)
    left.set(title="With per-class thresholds, cross-fitted (honest)", xlabel="epoch", ylabel="validation macro-F1")
    right.set(title="At 0.5", xlabel="epoch")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    save(plt, fig, path)
    return True


def curve_table(curves: list, cycle: int) -> list[str]:
    """Per `curve` run (`curve_runs`): the cross-fitted figure every `cycle` epochs (the full
    recipe's warm-restart cycle ends)."""
    found = [(f"{name}, seed {seed}", [r for r in records if r["epoch"] % cycle == 0])
             for _, name, _, seed, records in curves]
    if not found:
        return []
    width = max(len(ends) for _, ends in found)
    lines = ["| row, training length, seed | " + " | ".join(f"epoch {(i + 1) * cycle}" for i in range(width)) + " |",
             "|---|" + "---|" * width]
    for name, ends in found:
        cells = [f"{r['val_macro_f1_cross_fitted']:.3f}" for r in ends]
        lines.append(f"| {name} | " + " | ".join(cells + [""] * (width - len(cells))) + " |")
    return lines


def curve_differences(curves: list, benchmark_epochs: int, cycle: int) -> list[str]:
    """Each `curve` run (`curve_runs`) of the full recipe without a technique ("g-<technique>") against g's run
    of the same length and seed, cross-fitted: the difference at the benchmark's last epoch, at
    the longer run's last, and averaged over the cycle ends after the benchmark's last epoch (one
    epoch's figure moves by a few points from cycle to cycle); per seed and mean ± sd. Does a
    technique's cost shrink with training?"""
    runs = {(row, factor, seed): records for row, _, factor, seed, records in curves}
    lines = []
    for row, factor in sorted({(r, f) for r, f, _ in runs if r.startswith("g-")}):
        seeds = sorted(s for r, f, s in runs if (r, f) == (row, factor) and ("g", factor, s) in runs)
        at = {}
        for seed in seeds:
            mine = {r["epoch"]: r["val_macro_f1_cross_fitted"] for r in runs[row, factor, seed]}
            full = {r["epoch"]: r["val_macro_f1_cross_fitted"] for r in runs["g", factor, seed]}
            last = max(mine)
            later = [e for e in mine if benchmark_epochs < e <= last and e % cycle == 0 and e in full]
            at[seed] = (mine[benchmark_epochs] - full[benchmark_epochs], mine[last] - full[last],
                        float(np.mean([mine[e] - full[e] for e in later])) if later else float("nan"), last)
        if not at:
            continue
        lengths = "/".join(map(str, sorted({v[3] for v in at.values()})))
        per_seed = "; ".join(f"seed {s}: {a:+.3f} / {b:+.3f} / {c:+.3f}" for s, (a, b, c, _) in at.items())
        lines.append(f"| {row} x{factor:g} | {len(seeds)} | {signed([v[0] for v in at.values()])} | "
                     f"{signed([v[1] for v in at.values()])} ({lengths}) | {signed([v[2] for v in at.values()])} | "
                     f"{per_seed} |")
    if not lines:
        return []
    return [f"| row minus g, both trained as long | seeds | at epoch {benchmark_epochs} | at the last epoch (which) | "
            f"over the cycle ends after epoch {benchmark_epochs} | per seed, the same three |",
            "|---|---|---|---|---|---|", *lines]


# What the paper reports for each technique (Zhang et al. 2021, Results: Tables 1-3, in words).
PAPER_SAYS = {
    "acp_head": "Table 1: the modified architectures \"greatly improve\" F1",
    "hard_sampler": "Table 1: \"a large increase in F1\" with hard example mining",
    "e_loss_focal": "Table 2: \"+1-2%\" F1 with E-loss (with focal)",
    "group_lrs": "Table 3: training- and testing-time strategies together \"approximately +1%\"",
    "warm_restarts": "(Table 3, with the other strategies)",
    "oversampling": "(Table 3, with the other strategies)",
    "tta": "(Table 3, with the other strategies)",
    "thresholds": "(Table 3, with the other strategies)",
}


def direction(values) -> str:
    """+ or - where the mean differs from 0 by more than one sd over seeds, else ~."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return "?"
    mean, sd = values.mean(), values.std(ddof=1)
    return "~" if abs(mean) <= sd else ("+" if mean > 0 else "-")


def paper_table(rows, scores: dict) -> list[str]:
    """Per technique: the paper's claim, the cumulative step that adds it (with the techniques
    added in the same step), and what it contributes to the full recipe (g minus g without it)."""
    lines = ["| technique | the paper | cumulative step here | in the full recipe (g - g without it) | direction here |",
             "|---|---|---|---|---|"]
    names = [r.name for r in rows if "-" not in r.name]
    for technique, claim in PAPER_SAYS.items():
        step = next((names[i] for i, (_, _, added) in enumerate(CUMULATIVE) if technique in added), None)
        previous = names[names.index(step) - 1] if step and names.index(step) > 0 else None
        cumulative = paired_difference(scores, step, previous) if previous else []
        crossed = paired_difference(scores, step, previous, "cross_fitted") if previous else []
        removed = f"g-{technique}"
        contribution = [-d for d in paired_difference(scores, removed, "g")] if scores.get(removed) else []
        lines.append(f"| {NAMES[technique]} | {claim} | {step}: {signed(cumulative)} (cross-fitted {signed(crossed)}) | "
                     f"{signed(contribution)} | "
                     f"{direction(contribution)} |")
    return lines


def weights_table(runs: dict) -> list[str]:
    """E-loss's class weights (normalised to sum to 28) at this benchmark's training counts and at
    Kaggle's: one alpha re-weights a smaller or flatter label set less."""
    from hpa_jax.classes import KAGGLE_TRAIN_COUNTS
    from hpa_jax.training.losses import effective_number_weights

    if not runs:
        return []
    counts = {"this benchmark's training fold": np.load(Workdir(next(iter(runs.values()))).val_probs)["train_counts"],
              "Kaggle's 31,072 images": np.asarray(KAGGLE_TRAIN_COUNTS)}
    common = common_classes()
    lines = ["| alpha | counts | largest / smallest weight | mean weight, common classes | mean weight, rare classes |",
             "|---|---|---|---|---|"]
    for alpha in (0.9, 0.99, 0.999):
        for name, n in counts.items():
            w = effective_number_weights(n, alpha)
            lines.append(f"| {alpha} | {name} (class sizes {n.min()}-{n.max()}) | {w.max() / w.min():.1f} | "
                         f"{w[common].mean():.2f} | {w[~common].mean():.2f} |")
    return lines


def averaging_table(runs: dict) -> list[str]:
    """AVERAGED_TRAINING's runs: every AVERAGED_CHECKPOINTS entry scored as row g is (D4 TTA,
    cross-fitted thresholds), against the same runs' best single checkpoint, seed by seed."""
    found = {seed: run_dir for (training, seed), run_dir in runs.items() if training == AVERAGED_TRAINING}
    if not found:
        return []
    scores = {name: {seed: score_run(run_dir, True, True, seed, name) for seed, run_dir in found.items()}
              for name in AVERAGED_CHECKPOINTS}
    machines = [json.loads((found[seed] / "done.json").read_text()).get("machine", "?") for seed in sorted(found)]
    loads = " / ".join(m.group(1) for m in (re.search(r", 1-min load ([\d.]+)", line) for line in machines) if m)
    machines = sorted({re.sub(r", 1-min load [\d.]+", "", line) for line in machines})
    lines = ["| checkpoint of the full recipe (g) | seeds | macro-F1 (headline) | vs the best single checkpoint | "
             "per seed (headline) | at 0.5 | common classes | rare classes |", "|---|---|---|---|---|---|---|---|"]
    for name, (_, label) in AVERAGED_CHECKPOINTS.items():
        s = scores[name]
        versus = "" if name == "best" else signed(paired_difference(scores, name, "best"))
        per_seed = " / ".join(f"{s[seed]['headline']:.4f}" for seed in sorted(s))
        lines.append(f"| {label} | {len(s)} | {mean_sd([v['headline'] for v in s.values()])} | {versus} | {per_seed} | "
                     f"{mean_sd([v['at_0.5'] for v in s.values()])} | {mean_sd([v['common'] for v in s.values()])} | "
                     f"{mean_sd([v['rare'] for v in s.values()])} |")
    return lines + ["", f"Trained and scored on {'; '.join(machines)} (1-min load at each run's end: {loads})."]


def kept_notes(text: str) -> str:
    match = re.search(r"<!-- notes -->.*?<!-- /notes -->", text, flags=re.S)
    return match.group(0) if match else "<!-- notes -->\n(analysis to be written once every row has run)\n<!-- /notes -->"


def write(results: pathlib.Path, rows, measured_on: str) -> pathlib.Path:
    """docs/ablation.md and its figures from the runs kept in `results`; `measured_on`: the machine's line."""
    runs = finished_runs(results)
    scores = {}
    for row in rows:
        scores[row.name] = {seed: score_run(run_dir, "tta" in row.techniques, "thresholds" in row.techniques, seed)
                            for (training, seed), run_dir in runs.items() if training == row.training}
    seconds = sum(json.loads((d / "done.json").read_text())["seconds"] for d in runs.values())
    header = ["| row | what | seeds | macro-F1 (headline) | vs previous row | at 0.5 | cross-fitted thresholds | "
              "vs previous row, cross-fitted | common classes | rare classes |", "|---|---|---|---|---|---|---|---|---|---|"]
    table, previous = list(header), None
    for row in rows:
        if "-" in row.name:
            continue
        s = scores[row.name]
        diff = signed(paired_difference(scores, row.name, previous)) if previous else ""
        cross = signed(paired_difference(scores, row.name, previous, "cross_fitted")) if previous else ""
        table.append(f"| {row.name} | {row.label} | {len(s)} | {mean_sd([v['headline'] for v in s.values()])} | "
                     f"{diff} | {mean_sd([v['at_0.5'] for v in s.values()])} | "
                     f"{mean_sd([v['cross_fitted'] for v in s.values()])} | {cross} | "
                     f"{mean_sd([v['common'] for v in s.values()])} | "
                     f"{mean_sd([v['rare'] for v in s.values()])} |")
        previous = row.name
    removed = ["| row | what | seeds | macro-F1 (headline) | vs g | common classes | rare classes |",
               "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "-" not in row.name:
            continue
        s = scores[row.name]
        removed.append(f"| {row.name} | {row.label} | {len(s)} | {mean_sd([v['headline'] for v in s.values()])} | "
                       f"{signed(paired_difference(scores, row.name, 'g'))} | "
                       f"{mean_sd([v['common'] for v in s.values()])} | {mean_sd([v['rare'] for v in s.values()])} |")
    probes = ["| probe: the full recipe (g) with | seeds | macro-F1 (headline) | vs g | at 0.5 | common classes | "
              "rare classes |", "|---|---|---|---|---|---|---|"]
    for name, values in PROBES.items():
        found = {seed: score_run(d, True, True, seed) for (t, seed), d in runs.items() if t == f"probe-{name}"}
        if not found:
            continue
        scores[f"probe-{name}"] = found
        setting = ", ".join(f"`{k}={v}`" for k, v in values.items())
        probes.append(f"| {setting} | {len(found)} | {mean_sd([v['headline'] for v in found.values()])} | "
                      f"{signed(paired_difference(scores, f'probe-{name}', 'g'))} | "
                      f"{mean_sd([v['at_0.5'] for v in found.values()])} | "
                      f"{mean_sd([v['common'] for v in found.values()])} | {mean_sd([v['rare'] for v in found.values()])} |")
    averaged = averaging_table(runs)
    trainings = training_rows(rows)
    calibration = ["| training (row) | mean probability / label rate | best single threshold's macro-F1 | at 0.5 |",
                   "|---|---|---|---|"]
    for training, name in trainings.items():
        s = [score_run(d, False, False, seed) for (t, seed), d in runs.items() if t == training]   # no TTA
        if s:
            calibration.append(f"| {name} | {mean_sd([v['mean_prob_over_label_rate'] for v in s])} | "
                               f"{mean_sd([v['best_single_threshold_f1'] for v in s])} | "
                               f"{mean_sd([v['at_0.5'] for v in s])} |")
    if any(scores.values()):
        draw(rows, scores, FIGURE)
    curves = curve_runs(results)
    drawn = draw_curves(curves, runs, {r.name: r.training for r in rows if r.name in ("g", "a")}, CURVES)
    classes = draw_classes(rows, scores, CLASSES)
    lines = [
        "# The paper's ablation, rerun on the synthetic benchmark", "",
        f"Generated by `scripts/ablation.py report` from {len(runs)} finished runs ({seconds / 3600:.1f} h of "
        f"training and scoring summed over runs, which go one per core side by side; {measured_on}). What was run and how: the docstring of `scripts/ablation.py`.", "",
        "Scale (the quickstart's ResNet18 recipe otherwise): " + ", ".join(f"`{k}={v}`" for k, v in
                                                                        SCALE.items()) + ".", "",
        "## Cumulative rows", "",
        "Headline: macro-F1 at 0.5 for rows a-f, with per-class thresholds cross-fitted for g (fitted on one "
        "stratified half of the validation fold, scored on the other, both ways). Mean ± sd over seeds; "
        "\"vs previous row\" is the per-seed difference (same seed, same split), mean ± sd, of the headline and of "
        "the cross-fitted figure (which a shift of the probabilities does not move). Common / rare: "
        "the headline predictions' per-class F1 over Kaggle's 14 most and 14 least frequent classes.", "",
        *table, "", "![ablation](ablation.png)", "",
        *(["![per-class F1](ablation_classes.png)", ""] if classes else []),
        "## The full recipe without one technique", "", *removed, "",
        *(["## Other settings of the techniques", "",
           "Variants of the full recipe, scored as row g (D4 TTA, cross-fitted thresholds).", "", *probes, ""]
          if len(probes) > 2 else []),
        *(["## Checkpoint averaging", "",
           f"The full recipe (g) trained again keeping its last {AVERAGED_CONFIG['checkpoint.keep']} epoch "
           "checkpoints (`checkpoint.keep`; nothing else changes, so its last checkpoint is row g's, up to the "
           "machine it ran on), then averaged by `--mode=swa` (`hpa_jax/training/averaging.py`: the uniform mean of "
           "the weights, BatchNorm statistics recomputed with one pass over the training images), each scored as "
           "row g is (D4 TTA, per-class thresholds cross-fitted). The best single checkpoint is the one "
           "`eval.checkpoint=best` restores, chosen by its validation score on the same fold it is scored on, which "
           "flatters it; the averages choose nothing. \"vs the best single checkpoint\": the per-seed difference, "
           "mean ± sd.", "", *averaged, ""] if averaged else []),
        "## E-loss's class weights at this scale", "",
        "The weights E-loss gives each class, `(1 - alpha) / (1 - alpha^n)` normalised to sum to 28 "
        "(`loss.normalize_weights`), at the class sizes n of one training fold here and of the Kaggle set.", "",
        *weights_table(runs), "",
        "## Calibration", "",
        "The mean predicted probability over the label rate (1 = calibrated on average), and what one "
        "threshold fitted on the fold gives against 0.5: a loss that shifts probabilities loses at 0.5 what a "
        "fitted threshold gives back.", "", *calibration, "",
        "## Which checkpoint: the selection criterion", "",
        "Each run's epochs, chosen by each criterion (`checkpoint.best_metric`, or the last epoch); the "
        "cross-fitted macro-F1 (no TTA) of the chosen epoch, mean ± sd over seeds.", "",
        *selection_table(runs, trainings), "",
    ]
    if drawn:
        cycle, epochs = SCALE["optim.cycle_epochs"], SCALE["train.num_epochs"]
        differences = curve_differences(curves, epochs, cycle)
        lines += ["## Learning curves", "",
                  "Was the benchmark's training long enough? Rows trained longer (`curve`; g's "
                  f"{cycle}-epoch cycles continue, a's single cosine stretches over the longer run), against the "
                  f"benchmark's own runs (dashed in the figure, {epochs} epochs). Cross-fitted macro-F1 (no TTA) every "
                  f"{cycle} epochs (g's cycle ends, where its learning rate is lowest; a's rate reaches its lowest only "
                  "at the run's end):", "",
                  *curve_table(curves, cycle), "", "![learning curves](ablation_curves.png)", "",
                  *(["Do the costs found at the benchmark's length hold when both are trained longer? The full recipe "
                     "without a technique against the full recipe, same seed, same length (cross-fitted, no TTA; "
                     "mean ± sd over seeds):", "", *differences, ""] if differences else [])]
    lines += ["## Rerun", "", "```bash", ".venv/bin/python scripts/ablation.py run --rows=d --seeds=0,1,2   # one row",
              ".venv/bin/python scripts/ablation.py run                               # all rows (resumes)",
              ".venv/bin/python scripts/ablation.py run --probes=e_alpha_0.9 --seeds=0,1   # another setting",
              ".venv/bin/python scripts/ablation.py curve --rows=a,g --epochs_factor=2     # trained longer",
              ".venv/bin/python scripts/ablation.py curve --rows=g,g-e_loss_focal,g-hard_sampler --epochs_factor=2",
              ".venv/bin/python scripts/ablation.py swa                               # checkpoint averaging",
              ".venv/bin/python scripts/ablation.py report", "```", "",
              "## Against the paper, technique by technique", "",
              "Cumulative step: the row that adds the technique minus the row before (row e adds three). In the "
              "full recipe: g minus g without the technique, per seed. Direction: + or - where that mean is more "
              "than one sd from 0, ~ otherwise.", "", *paper_table(rows, scores), "", "## Analysis", "",
              kept_notes(read_or_empty(DOC)), ""]
    DOC.write_text("\n".join(lines))
    return DOC


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "curve", "swa", "report"))
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "ablation",
                        help="checkpoints (git-ignored)")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS,
                        help="what the report reads, kept in the repo")
    parser.add_argument("--shard", type=shard, default=None, help="run, curve, swa: i/n, every n-th run left from the "
                        "i-th")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="run, curve, swa: processes side by side")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=None, help="comma-separated row names")
    parser.add_argument("--probes", type=lambda s: s.split(","), default=None,
                        help=f"comma-separated variants of the full recipe: {', '.join(PROBES)} (alone: only these)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=list(SEEDS),
                        help="run, curve and swa: comma-separated seeds")
    parser.add_argument("--epochs_factor", type=float, default=1.2, help="curve: training length x this")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):   # before jax loads; workers inherit it
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()
    if args.command == "report":
        write(args.results, rows(), machine())
    elif args.shard is None:
        run_workers(args, argv)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
