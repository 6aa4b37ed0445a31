"""Evaluation: the jitted predict step with test-time augmentation (`inference`), macro-F1 and
thresholds (`metrics`, `thresholds`), the evaluate and predict modes (`modes`) and ensembles of
prediction files (`ensemble`)."""
