"""Per-class decision thresholds on predicted probabilities: the paper's search (best single
threshold, then greedy per class), the 2018 3rd place's label-rate thresholds, applying them,
and cross-fitting (thresholds fitted on other rows than those they decide).

A prediction is always `probs > threshold` (strict), compared in float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hpa_jax.evaluation.metrics import macro_f1, per_class_scores

# The paper's single-threshold search (0.1, 0.15, ..., 0.9) and the per-class candidates.
COARSE_GRID = np.arange(0.1, 0.9001, 0.05)
FINE_GRID = np.arange(0.02, 0.98, 0.01)
THRESHOLD_METHODS = ("greedy", "single", "label_rate")


@jax.jit
def threshold_counts(probs, labels, grid):
    """(tp, predicted), both (C, T) int32: per class c and candidate t, the true and all
    positives of `probs[:, c] > grid[t]`. Each probability is binned once among the sorted
    candidates (a binary search), and a histogram per class with a reverse cumulative sum gives
    every candidate's counts: about the cost of one pass over the data, not C x T passes."""
    num_classes, num_bins = probs.shape[1], grid.shape[0] + 1
    order = jnp.argsort(grid)
    # bins[n, c]: how many candidates lie strictly below probs[n, c] (those it is predicted at).
    bins = jnp.searchsorted(grid[order], probs, side="left")
    keys = (jnp.arange(num_classes) * num_bins + bins).ravel()

    def count_above(weights):
        hist = jnp.bincount(keys, weights, length=num_classes * num_bins).reshape(num_classes, num_bins)
        return jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:][:, jnp.argsort(order)]

    return count_above(labels.astype(jnp.int32).ravel()), count_above(None)


def _f1_table(tp, predicted, positives):
    """F1 = 2tp / (positives + predicted) of every (class, candidate), in float64: with tens of
    thousands of images two different F1s can round to the same float32, and the search must
    order them as the exact fractions do (as a float64 brute force or scikit-learn would)."""
    den = positives[:, None].astype(jnp.float64) + predicted
    return jnp.where(den > 0, 2 * tp / jnp.maximum(den, 1), 0.0)


@functools.partial(jax.jit, static_argnames="num_coarse")
def _greedy_indices(tp, predicted, positives, num_coarse, max_passes):
    """Grid index per class, from the `threshold_counts` table over the grid `coarse ++ fine`:
    the first `num_coarse` columns are the single-threshold candidates, the rest the per-class ones.

    Start: the coarse value with the best macro-F1 (argmax: ties go to the first grid value).
    Then classes 0..C-1 in order, the others fixed: the fine value with the best macro-F1
    replaces the current one only if strictly better (first on ties), so passes converge;
    passes repeat until one changes nothing or `max_passes` (0 gives the single threshold).
    Macro-F1 is the mean of per-class F1s, so with the other classes fixed it moves only
    through F1_c: comparing column c of the table is comparing macro-F1s.
    """
    f1 = _f1_table(tp, predicted, positives)
    start = jnp.argmax(f1[:, :num_coarse].mean(0))
    fine = f1[:, num_coarse:]

    def visit(c, idx):
        best = jnp.argmax(fine[c])
        return idx.at[c].set(jnp.where(fine[c, best] > f1[c, idx[c]], num_coarse + best, idx[c]))

    def one_pass(state):
        idx, _, passes = state
        new = lax.fori_loop(0, f1.shape[0], visit, idx)
        return new, jnp.any(new != idx), passes + 1

    idx, _, _ = lax.while_loop(lambda state: state[1] & (state[2] < max_passes), one_pass,
                               (jnp.full(f1.shape[0], start), jnp.bool_(True), 0))
    return idx


def _rate_thresholds(probs: np.ndarray, num_positive: np.ndarray) -> np.ndarray:
    """Per class, a threshold halfway between the k-th and (k+1)-th largest probability
    (k = num_positive[c]), so exactly k rows pass unless probabilities tie; 1 above the top, 0
    below the bottom. NumPy: XLA's CPU sort is ~10x slower than NumPy's on this shape."""
    descending = -np.sort(-probs, axis=0)
    padded = np.concatenate([np.ones_like(descending[:1]), descending, np.zeros_like(descending[:1])])
    columns = np.arange(probs.shape[1])
    return (padded[num_positive, columns] + padded[num_positive + 1, columns]) / np.float32(2)


def search_thresholds(probs, labels, *, coarse=COARSE_GRID, fine=FINE_GRID, max_passes: int = 10,
                      method: str = "greedy", rates=None):
    """Per-class thresholds fitted to (N, C) validation probabilities and 0/1 labels.

    "greedy" is the paper's multi-threshold search: the best single threshold on `coarse`, then
    class by class the best value on `fine` (see `_greedy_indices`; ties go to the first grid
    value, the smallest for the ascending default grids). "single" stops after the first step.
    "label_rate" (2018 3rd place) picks per class the threshold at which the predicted positive
    rate on `probs` is the class's positive rate in `labels`, or in `rates` (C,) if given (the
    training label rates, say). Predictions are `probs > threshold`, strictly, in float32.
    Returns (thresholds (C,) float32, macro-F1 of those predictions against `labels`).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; expected one of {', '.join(THRESHOLD_METHODS)}")
    probs = np.asarray(probs, np.float32)
    labels = np.asarray(labels, np.int32)
    if method == "label_rate":
        rates = np.asarray(labels.mean(0) if rates is None else rates, np.float64)
        num_positive = np.clip(np.rint(rates * len(probs)), 0, len(probs)).astype(np.int32)
        thresholds = _rate_thresholds(probs, num_positive)
    else:
        if not len(coarse):
            raise ValueError("the coarse threshold grid is empty")
        grid = np.concatenate([coarse, fine]).astype(np.float32)
        tp, predicted = threshold_counts(probs, labels, grid)
        with jax.enable_x64(True):
            idx = _greedy_indices(tp, predicted, labels.sum(0), len(coarse), max_passes if method == "greedy" else 0)
        thresholds = grid[np.asarray(idx)]
    return thresholds, float(macro_f1(labels, apply_thresholds(probs, thresholds)))


def force_one_label(probs, preds) -> np.ndarray:
    """Switches on the most probable class of every row with no predicted label (2018 winner):
    every HPA image has at least one label, so an empty row is always wrong."""
    probs, preds = np.asarray(probs), np.array(preds, bool)
    empty = np.flatnonzero(~preds.any(1))
    preds[empty, probs[empty].argmax(1)] = True
    return preds


def apply_thresholds(probs, thresholds, force_one: bool = False) -> np.ndarray:
    """(N, C) bool predictions `probs > thresholds` (a scalar or (C,)), compared in float32 as
    the search does, optionally with `force_one_label`."""
    preds = np.asarray(probs, np.float32) > np.asarray(thresholds, np.float32)
    return force_one_label(probs, preds) if force_one else preds


def cross_fitted_predictions(probs, labels, parts, *, method: str = "greedy") -> np.ndarray:
    """(N, C) bool predictions in which every row's thresholds were fitted on the other parts'
    rows only (`parts`: (N,) part number per row, e.g. folds, or two halves of one validation
    fold): the thresholds never saw the images they decide, so the score of these predictions
    is an honest estimate of what fitted thresholds give on new images."""
    probs, labels, parts = np.asarray(probs, np.float32), np.asarray(labels), np.asarray(parts)
    preds = np.zeros(probs.shape, bool)
    for part in np.unique(parts):
        inside = parts == part
        if inside.all():
            raise ValueError("cross-fitting needs at least two parts")
        thresholds, _ = search_thresholds(probs[~inside], labels[~inside], method=method)
        preds[inside] = apply_thresholds(probs[inside], thresholds)
    return preds



def report_scores(labels, probs, thresholds) -> dict:
    """What `reporting.report.write_report` tabulates: the number of images and the per-class
    scores (`metrics.per_class_scores`) at 0.5 and at the fitted `thresholds`."""
    labels = np.asarray(labels)
    return {"num_images": len(labels), "default": per_class_scores(labels, np.asarray(probs) > 0.5),
            "fitted": per_class_scores(labels, apply_thresholds(probs, thresholds))}
