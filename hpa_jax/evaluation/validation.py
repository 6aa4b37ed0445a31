"""A validation fold's scores, each epoch and at evaluation: the loss and macro-F1 at a fixed
threshold, and macro-F1 with per-class thresholds fitted on the fold (in-sample) and cross-fitted
over its two stratified halves (honest)."""

import numpy as np

from hpa_jax.data.folds import stratified_folds
from hpa_jax.evaluation import metrics
from hpa_jax.evaluation.thresholds import cross_fitted_predictions, search_thresholds


def score(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Validation loss (BCE, probabilities clipped to [1e-7, 1 - 1e-7]), macro-F1 and per-class
    F1 at a fixed threshold."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    preds = probs > threshold
    return {"val_loss": float(bce.mean()), "val_macro_f1": float(metrics.macro_f1(labels, preds)),
            "val_per_class_f1": [round(float(f), 5) for f in metrics.per_class_f1(labels, preds)]}


def validation_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """0/1 per validation image: two halves stratified over the classes (iterstrat), so that each
    half's fitted thresholds can be scored on the other."""
    return stratified_folds(labels, 2, seed)


def fitted_scores(labels: np.ndarray, probs: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, dict]:
    """(per-class thresholds fitted on the whole fold, its macro-F1 with them in-sample
    ("val_macro_f1_fitted": what `checkpoint.best_metric=val_macro_f1_fitted` ranks by) and
    cross-fitted over the fold's two halves ("val_macro_f1_cross_fitted": honest))."""
    thresholds, in_sample = search_thresholds(probs, labels, method=method)
    cross = float("nan")     # a fold of one image has no halves
    if len(labels) >= 2:
        crossed = cross_fitted_predictions(probs, labels, validation_halves(labels, seed), method=method)
        cross = float(metrics.macro_f1(labels, crossed))
    return thresholds, {"val_macro_f1_fitted": float(in_sample), "val_macro_f1_cross_fitted": cross}
