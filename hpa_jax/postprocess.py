"""The public names of scoring and deciding on predicted probabilities, under the path README
documents (`hpa_jax.postprocess.search_thresholds`): macro-F1 and the label-prior baseline live in
`hpa_jax.evaluation.metrics`, thresholds in `hpa_jax.evaluation.thresholds`, submission files in
`hpa_jax.reporting.outputs`."""

from hpa_jax.evaluation.metrics import label_prior_baseline, macro_f1, per_class_counts, per_class_f1, per_class_scores
from hpa_jax.evaluation.thresholds import (
                                           COARSE_GRID,
                                           FINE_GRID,
                                           THRESHOLD_METHODS,
                                           apply_thresholds,
                                           cross_fitted_predictions,
                                           force_one_label,
                                           search_thresholds,
)
from hpa_jax.reporting.outputs import format_predicted, write_submission

__all__ = ["COARSE_GRID", "FINE_GRID", "THRESHOLD_METHODS", "apply_thresholds", "cross_fitted_predictions",
           "force_one_label", "format_predicted", "label_prior_baseline", "macro_f1", "per_class_counts",
           "per_class_f1", "per_class_scores", "search_thresholds", "write_submission"]
