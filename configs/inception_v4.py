"""InceptionV4 as in Zhang et al. 2021: batch 48 at 512 x 512 input; the encoder's 1536 channels
become 3072 after ACP, then one buffering layer of 1024 units with 50% dropout.

"512 x 512 input" is read as the ResNet50 recipe's 512 crops from 768 px images. The paper gives
no LRs for InceptionV4; resnet50.py's [1e-2, 2e-2] cycles are kept.
"""

from hpa_jax.config.shipped import load

resnet50 = load("resnet50")


def get_config(setup=None):
    """`setup`: the training set after the config's ':' (`default.TRAINING_SETS`), e.g. `kaggle+hpav18`."""
    c = resnet50.get_config(setup)
    c.model.name = "inception_v4"
    c.model.head.layers = ((1024, 0.5),)
    c.train.batch_size = 48
    return c
