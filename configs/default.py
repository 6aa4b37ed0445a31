"""The defaults every config starts from (`hpa_jax/config/defaults.py`: the paper's optimiser,
HPA's 28 classes and 4 channels), as a config file of its own."""

from hpa_jax.config.defaults import get_config  # noqa: F401
