"""hpa_jax: Human Protein Atlas multi-label localisation in JAX/Flax (Zhang et al. 2021)."""

__version__ = "0.1.0"
