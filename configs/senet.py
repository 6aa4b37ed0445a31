"""SENet (SE-ResNeXt50 32x4d, the common HPA choice and timm's `seresnext50_32x4d`) as in
Zhang et al. 2021, the paper's best single model (macro-F1 0.789): LRs [1e-3, 3e-3, 5e-3],
batch 80, trained "until divergence".

Three LRs are three layer groups: the encoder's first and second halves at 1/5 and 3/5 of the
head's 5e-3. The paper gives no head for SENet; the ResNet50 head (ACP -> FC 1024, dropout 0.5)
and its crops, cycles and E-loss are kept. "Until divergence" is 4 cycles of 4 epochs here; the
best checkpoint by validation macro-F1 is what evaluation and prediction use.
"""

from hpa_jax.config.shipped import load

resnet50 = load("resnet50")


def get_config(setup=None):
    """`setup`: the training set after the config's ':' (`default.TRAINING_SETS`), e.g. `kaggle+hpav18`."""
    c = resnet50.get_config(setup)
    c.model.name = "seresnext50_32x4d"
    c.optim.lr = 5e-3
    c.optim.group_lr_multipliers = (0.2, 0.6, 1.0)
    c.train.batch_size = 80
    c.train.num_epochs = 16
    return c
