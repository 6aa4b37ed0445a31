"""Data: readers for the HPA layouts, the synthetic dataset, splits and the grain pipeline."""
