"""Evaluation: the jitted predict step with test-time augmentation and restoring a checkpoint's
variables (`inference`), macro-F1 (`metrics`), thresholds (`thresholds`), a validation fold's
scores (`validation`), the evaluate and predict modes (`modes`) and ensembles of prediction files
(`ensemble`)."""
