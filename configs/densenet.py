"""DenseNet ("DenseNet50" in the paper; DenseNet121, timm's `densenet121`, is the standard one)
as in Zhang et al. 2021: LRs [2e-3, 4e-3], "approximately 5 cycles".

The paper gives no head or batch size for DenseNet; resnet50.py's head (ACP -> FC 1024, dropout
0.5), crops, 4-epoch cycles and E-loss are kept, and the batch is the ResNet50 one. The 2018
winner's DenseNet head (BatchNorm before each FC) is `--config.model.head.batch_norm=True`.
"""

from hpa_jax.config.shipped import load

resnet50 = load("resnet50")


def get_config(setup=None):
    """`setup`: the training set after the config's ':' (`default.TRAINING_SETS`), e.g. `kaggle+hpav18`."""
    c = resnet50.get_config(setup)
    c.model.name = "densenet121"
    c.optim.lr = 4e-3
    c.optim.group_lr_multipliers = (0.5, 1.0)
    c.train.num_epochs = 20          # 5 cycles of 4 epochs
    return c
