"""Figures a person reads faster than numbers: training curves from `metrics.jsonl`."""

import json
import pathlib

from matplotlib.figure import Figure

from hpa_jax.runtime.distributed import is_primary


def plot_training_curves(metrics_path, out_path) -> pathlib.Path:
    """Loss (train and validation) and validation macro-F1 per epoch (at the threshold, and with
    per-class thresholds cross-fitted where recorded), side by side (drawn by the primary process
    only)."""
    if not is_primary():
        return pathlib.Path(out_path)
    records = [json.loads(line) for line in pathlib.Path(metrics_path).read_text().splitlines() if line]
    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(10, 3.8))
    ax_loss, ax_f1 = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in records], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_f1.plot(epochs, [r["val_macro_f1"] for r in records], "o-", color="tab:green", label="at the threshold")
    if all("val_macro_f1_cross_fitted" in r for r in records):
        ax_f1.plot(epochs, [r["val_macro_f1_cross_fitted"] for r in records], "s-", color="tab:purple",
                   label="fitted thresholds, cross-fitted")
        ax_f1.legend()
    ax_f1.set(xlabel="epoch", ylabel="macro-F1", title="Validation macro-F1", ylim=(0, None))
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = pathlib.Path(out_path)
    tmp = out_path.with_name(out_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out_path)
    return out_path
