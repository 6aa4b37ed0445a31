"""Experiment configs: the configs shipped with the package, found by name (`shipped`)."""
