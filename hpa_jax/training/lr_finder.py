"""The LR range test (Smith 2017; the paper's LR finder): grow the learning rate exponentially
per batch from a tiny value, record the smoothed loss, stop when it diverges.

It trains a throw-away copy of the model: nothing is checkpointed, so a later `--mode=train`
starts from scratch as if the finder had never run.
"""

import csv

import jax
import numpy as np
import optax
from matplotlib.figure import Figure
from tqdm import tqdm

from hpa_jax.data import pipeline
from hpa_jax.data.datasets import load_dataset
from hpa_jax.models import create_model_from_config
from hpa_jax.runtime import distributed, sharding
from hpa_jax.training import optim
from hpa_jax.training.state import create_train_state
from hpa_jax.training.step import class_weights_for, make_train_step
from hpa_jax.workdir import Workdir


def exponential_schedule(start_lr: float, end_lr: float, num_steps: int) -> optax.Schedule:
    """lr_i = start * (end / start) ** (i / (num_steps - 1)): equal ratios per batch."""
    return optax.exponential_decay(start_lr, transition_steps=max(num_steps - 1, 1), decay_rate=end_lr / start_lr)


class SmoothedLoss:
    """Bias-corrected exponential moving average of the loss, as fastai's LR finder plots it."""

    def __init__(self, beta: float):
        self.beta, self.average, self.count = beta, 0.0, 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta ** self.count)


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """The highest LR at which the smoothed loss still falls: the LR of its minimum."""
    return float(lrs[int(np.argmin(smoothed))])


def lr_find(config, workdir) -> dict:
    """Runs the range test on the training folds; writes `lr_find.csv` and `lr_find.png`."""
    f = config.lr_find
    run = Workdir(workdir)
    run.path.mkdir(parents=True, exist_ok=True)
    dataset = distributed.primary_first(load_dataset, config)
    train_idx, _ = dataset.split(config.data.fold)
    mesh = sharding.make_mesh()
    schedule = exponential_schedule(f.start_lr, f.end_lr, f.num_steps)
    # The layer-group multipliers still apply to the swept LR.
    tx = optim.optimizer_from_config(config, schedule)
    model = create_model_from_config(config)
    state = create_train_state(model, tx, jax.random.key(config.seed), image_size=config.data.crop_size,
                               in_channels=config.in_channels, pretrained=config.model.pretrained,
                               model_name=config.model.name)
    state = jax.device_put(state, sharding.replicated(mesh))
    train_step = make_train_step(config, mesh, class_weights_for(config, dataset.train_labels[train_idx]))
    source = dataset.train_source(train_idx, config.data)

    per_epoch = max(pipeline.steps_per_epoch(len(source), config.train.batch_size, config.train.steps_per_epoch), 1)
    batches = pipeline.train_batches_from_config(config, source, epoch=0, num_epochs=-(-f.num_steps // per_epoch))
    rows, best, smoother = [], np.inf, SmoothedLoss(f.smoothing)
    dropout_rng = jax.random.key(config.seed + 1)
    bar = tqdm(zip(range(f.num_steps), batches), total=f.num_steps, desc="lr_find", unit="batch",
               dynamic_ncols=True, disable=not distributed.is_primary())
    try:
        for step, batch in bar:
            images, labels, d4 = sharding.put_batch(mesh, (batch["image"], batch["labels"], batch["d4"]))
            state, metrics = train_step(state, images, labels, jax.random.fold_in(dropout_rng, step), d4)
            loss = float(sharding.replicated_to_host(metrics["loss"]))
            smoothed = smoother.update(loss)
            rows.append((step, float(schedule(step)), loss, smoothed))
            bar.set_postfix(lr=f"{rows[-1][1]:.2e}", loss=f"{smoothed:.4f}")
            best = min(best, smoothed)
            if not np.isfinite(loss) or smoothed > f.diverge_factor * best:
                break
    finally:
        bar.close()
        batches.close()
    lrs, smoothed = np.array([r[1] for r in rows]), np.array([r[3] for r in rows])
    finite = np.isfinite(smoothed)
    suggestion = suggest_lr(lrs[finite], smoothed[finite])
    if distributed.is_primary():
        with open(run.lr_find_table, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "lr", "loss", "smoothed_loss"])
            writer.writerows(rows)
        plot_lr_find(lrs, smoothed, suggestion, run.lr_find_figure)
    print(f"lr_find: {len(rows)} steps from lr {lrs[0]:.1e} to {lrs[-1]:.1e}; the smoothed loss still falls up to "
          f"lr {suggestion:.2e} (suggested) -> {run.lr_find_figure}")
    return {"suggested_lr": suggestion, "num_steps": len(rows)}


def plot_lr_find(lrs, smoothed, suggestion: float, out_path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(lrs, smoothed)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.1e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
