"""The defaults every config starts from, as a config file of its own: the paper's optimiser,
HPA's 28 classes and 4 channels, the training sets a config takes after its ':'. They live in the
package (`hpa_jax/config/defaults.py`), which checks configs against them."""

from hpa_jax.config.defaults import HPA_MEAN, HPA_STD, TRAINING_SETS, get_config, with_training_set  # noqa: F401
