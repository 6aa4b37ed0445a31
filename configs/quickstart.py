"""A CPU-sized run on the embedded synthetic dataset: a narrow ResNet18 on 128 px fields.

Same code path as the paper's configs; the sizes shrink so that training, evaluation and
prediction finish in a few minutes on two CPU cores, and AdamW replaces SGD because the
network starts from random weights (the paper fine-tunes ImageNet weights) and has only
~800 steps to learn.
"""

from hpa_jax.config import defaults as default


def get_config():
    c = default.get_config()
    c.data.source = "synthetic"
    c.data.synthetic.num_train = 2000
    c.data.synthetic.num_test = 300
    c.data.synthetic.image_size = 128
    c.data.image_size = 0
    c.data.crop_size = 112
    c.data.num_threads = 4
    c.model.name = "resnet18"
    c.model.width = 16
    c.model.head.layers = ((128, 0.25),)
    c.train.batch_size = 32
    c.train.num_epochs = 16
    c.optim.name = "adamw"
    c.optim.lr = 3e-3
    c.optim.weight_decay = 1e-4
    # The paper's training recipe, scaled down: the ACP + buffering head, two layer groups
    # [lr/2, lr], two warm-restart cycles of 8 epochs. Not E-loss class weights nor the hard
    # sampler: trained from scratch at this size, each lowered the honest (cross-fitted)
    # macro-F1 over three seeds in docs/ablation.md (E-loss's weights by ~0.07, the hard sampler
    # by ~0.03). Put them back with --config.loss.e_alpha=0.99 --config.loss.hard_sample_ratio=0.75.
    c.optim.group_lr_multipliers = (0.5, 1.0)
    c.optim.schedule = "cosine_restarts"
    c.optim.cycle_epochs = 8
    c.eval.batch_size = 64
    c.checkpoint.keep = 2
    return c
