"""`report.md` and its figures for an evaluation: scores at 0.5 and at fitted thresholds, a
per-class table in class order, per-class F1 bars, thresholds and training curves."""

import pathlib

import numpy as np
from matplotlib.figure import Figure

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.reporting import outputs
from hpa_jax.runtime.distributed import is_primary
from hpa_jax.workdir import Workdir


def _per_class_f1_figure(f1_default, f1_fitted, out_path):
    fig = Figure(figsize=(11, 4.5))
    ax = fig.subplots()
    x = np.arange(len(CLASS_NAMES))
    ax.bar(x - 0.2, f1_default, 0.4, label="threshold 0.5")
    ax.bar(x + 0.2, f1_fitted, 0.4, label="fitted thresholds")
    ax.set_xticks(x, [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)], rotation=75, ha="right", fontsize=7)
    ax.set(ylabel="F1", ylim=(0, 1), title="Per-class F1")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


def _thresholds_figure(thresholds, out_path):
    fig = Figure(figsize=(11, 3.5))
    ax = fig.subplots()
    x = np.arange(len(CLASS_NAMES))
    ax.bar(x, thresholds, color="tab:purple")
    ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(x, [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)], rotation=75, ha="right", fontsize=7)
    ax.set(ylabel="threshold", ylim=(0, 1), title="Fitted per-class thresholds")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


def write_report(out_dir, *, title: str, num_images: int, default: dict, fitted: dict, thresholds, fit_note: str,
                 summary_rows=(), fold_rows=(), training_curves: str | None = None) -> pathlib.Path:
    """Writes `out_dir/report.md`, `per_class_f1.png` and `thresholds.png`.

    `default` and `fitted` are the per-class scores (`evaluation.metrics.per_class_scores`: precision,
    recall, F1 and support per class) at threshold 0.5 and at the fitted `thresholds`. `summary_rows` are extra (name, value) lines for the summary table; `fold_rows` are
    per-fold dicts (fold, images, f1_at_0.5, in_sample, cross_fitted) for cross-validation.
    Only the primary process writes.
    """
    out = Workdir(out_dir)
    if not is_primary():
        return out.report
    _per_class_f1_figure(np.asarray(default["f1"]), np.asarray(fitted["f1"]), out.per_class_f1_figure)
    _thresholds_figure(np.asarray(thresholds), out.thresholds_figure)

    lines = [f"# {title}", "", f"{num_images} images. {fit_note}", "", "| | macro-F1 |", "|---|---|",
             f"| threshold 0.5 | {float(np.mean(default['f1'])):.4f} |",
             f"| fitted thresholds (in-sample) | {float(np.mean(fitted['f1'])):.4f} |"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows]
    if fold_rows:
        lines += ["", "## Per fold", "",
                  "Cross-fitted: thresholds fitted on the other folds' out-of-fold predictions, scored on this "
                  "fold (an honest estimate). In-sample: fitted and scored on this fold (optimistic).", "",
                  "| fold | images | macro-F1 at 0.5 | in-sample fitted | cross-fitted |", "|---|---|---|---|---|"]
        lines += [f"| {r['fold']} | {r['images']} | {r['f1_at_0.5']:.4f} | {r['in_sample']:.4f} | "
                  f"{r['cross_fitted']:.4f} |" for r in fold_rows]
    lines += ["", "## Per class", "", "At the fitted thresholds (F1 at 0.5 beside them).", "",
              "| # | class | support | precision | recall | F1 | F1 at 0.5 | threshold |",
              "|---|---|---|---|---|---|---|---|"]
    for c, name in enumerate(CLASS_NAMES):
        lines.append(f"| {c} | {name} | {int(fitted['support'][c])} | {float(fitted['precision'][c]):.3f} | "
                     f"{float(fitted['recall'][c]):.3f} | {float(fitted['f1'][c]):.3f} | "
                     f"{float(default['f1'][c]):.3f} | {float(thresholds[c]):.2f} |")
    lines += ["", f"![per-class F1]({out.per_class_f1_figure.name})", "", f"![thresholds]({out.thresholds_figure.name})"]
    if training_curves:
        lines += ["", f"![training curves]({training_curves})"]
    return outputs.write_text(out.report, "\n".join(lines) + "\n")
