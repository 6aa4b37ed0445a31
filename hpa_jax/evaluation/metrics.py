"""Scores of (N, C) 0/1 predictions against labels: per-class counts, precision, recall and F1,
macro-F1 (the Kaggle HPA metric), and the label-prior baseline.

Array operations only, so they run under `jit` on 31,072 x 28 matrices without Python loops.
"""

import jax.numpy as jnp
import numpy as np


def per_class_counts(labels, preds):
    """True positives, false positives and false negatives per class (sums over axis 0)."""
    labels = jnp.asarray(labels, jnp.float32)
    preds = jnp.asarray(preds, jnp.float32)
    tp = (labels * preds).sum(0)
    fp = ((1 - labels) * preds).sum(0)
    fn = (labels * (1 - preds)).sum(0)
    return tp, fp, fn


def _safe_ratio(num, den):
    return jnp.where(den > 0, num / jnp.maximum(den, 1e-12), 0.0)


def per_class_scores(labels, preds) -> dict:
    """precision, recall and F1 per class; 0 where undefined (no positives at all gives F1 0)."""
    tp, fp, fn = per_class_counts(labels, preds)
    return {"precision": _safe_ratio(tp, tp + fp), "recall": _safe_ratio(tp, tp + fn),
            "f1": _safe_ratio(2 * tp, 2 * tp + fp + fn), "support": tp + fn}


def per_class_f1(labels, preds):
    return per_class_scores(labels, preds)["f1"]


def macro_f1(labels, preds):
    """Mean of the per-class F1s; a class with no true and no predicted positive counts as 0,
    as the Kaggle HPA metric (scikit-learn's f1_score(average='macro', zero_division=0))."""
    return per_class_f1(labels, preds).mean()


def label_prior_baseline(train_labels: np.ndarray, eval_labels: np.ndarray, seed: int = 0) -> float:
    """Macro-F1 of guessing each class independently at its training frequency: the score a
    model gets without looking at the image; anything learnt must beat it."""
    rng = np.random.default_rng(seed)
    prior = train_labels.mean(0)
    guesses = rng.random(eval_labels.shape) < prior
    return float(macro_f1(eval_labels, guesses))
