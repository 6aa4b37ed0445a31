"""GapNet-PL (Rumetshofer et al. 2019), the paper's baseline, as Zhang et al. 2021 trained it:
extra convolution blocks in the first stage, 768 x 768 input, SGD momentum 0.9 at lr 0.01,
L1 1e-7 and L2 1e-5, 30% dropout in the FC layers, batch 128.

GapNet-PL pools every block globally and concatenates, so the encoder's output is already
pooled and the head is `gap` (the identity on it) followed by GapNet's FC 256 -> FC 256.
It is the baseline: no ACP, no E-loss, plain BCE and one learning rate, the whole 768 px image
with D4 flips (no cropping). The paper gives no epoch count; 12 as the ResNets.
"""

import ml_collections

from hpa_jax.config import defaults as default


def get_config(setup=None):
    """`setup`: the training set after the config's ':' (`default.TRAINING_SETS`), e.g. `kaggle+hpav18`."""
    c = default.get_config()
    c.model.name = "gapnet_pl"
    # "we add some convolutional blocks in the first step, thus passing more features to the
    # second stage" (no number given): two extra 3x3 convs before block 1's max-pool. The original
    # standardised each image; so does this baseline.
    c.model.encoder_options = ml_collections.ConfigDict(
        {"extra_first_stage_convs": 2, "pool": "gap", "per_image_standardize": True})
    c.model.head.pool = "gap"
    c.model.head.layers = ((256, 0.3), (256, 0.3))
    c.data.image_size = 768
    c.data.crop_size = 768
    c.train.batch_size = 128
    c.train.num_epochs = 12
    c.optim.name = "sgd"
    c.optim.lr = 0.01
    c.optim.momentum = 0.9
    c.optim.l1 = 1e-7
    c.optim.weight_decay = 1e-5
    return default.with_training_set(c, setup)
