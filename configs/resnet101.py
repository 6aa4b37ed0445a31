"""ResNet101 as in Zhang et al. 2021: "the same as that of ResNet50 except that the ACP layer is
followed by two separate buffering layers with 4096 units, a 0.25 dropout ratio and 1024 units,
a 0.5 dropout ratio". Everything else (LRs, cycles, crops, batch, E-loss) is resnet50.py's.
"""

from hpa_jax.config.shipped import load

resnet50 = load("resnet50")


def get_config(setup=None):
    """`setup`: the training set after the config's ':' (`default.TRAINING_SETS`), e.g. `kaggle+hpav18`."""
    c = resnet50.get_config(setup)
    c.model.name = "resnet101"
    c.model.head.layers = ((4096, 0.25), (1024, 0.5))
    return c
