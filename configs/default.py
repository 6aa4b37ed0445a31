"""Shared defaults: the paper's optimiser and metric, HPA's 28 classes and 4 channels.

Backbone configs start from this and change only what the paper changes for them.
"""

import ml_collections
from ml_collections import config_dict

# Per-channel statistics of the 512 px Kaggle PNGs scaled to [0, 1] (R, G, B, Y), as used
# by the 2018 winner.
HPA_MEAN = (0.0746, 0.0506, 0.0509, 0.0763)
HPA_STD = (0.1228, 0.0857, 0.1299, 0.1194)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_classes = 28
    c.in_channels = 4
    c.metric = "macro_f1"

    c.data = ml_collections.ConfigDict()
    c.data.source = "kaggle"                       # "kaggle" (a folder in the Kaggle layout) | "synthetic"
    c.data.dir = config_dict.placeholder(str)      # required for "kaggle": train.csv, train/, test/, sample_submission.csv
    c.data.image_size = 0                          # resize every image to this square size first; 0 keeps it
    c.data.crop_size = 512                         # random training crop; evaluation sees the whole image
    c.data.num_folds = 5                           # multi-label stratified folds (iterstrat)
    c.data.fold = 0                                # the fold held out for validation
    c.data.mean = HPA_MEAN
    c.data.std = HPA_STD
    c.data.num_threads = 8                         # grain reader threads decoding PNGs
    c.data.prefetch = 4                            # batches grain prepares ahead
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.num_train = 1200
    c.data.synthetic.num_test = 300
    c.data.synthetic.image_size = 128
    c.data.synthetic.seed = 0
    c.data.synthetic.cache_dir = config_dict.placeholder(str)  # default: $HPA_JAX_CACHE or ~/.cache/hpa_jax

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet50"
    c.model.width = 64                             # stem width; stage i has width * 2**i (x4 in bottlenecks)
    c.model.dtype = "float32"                      # compute dtype; "bfloat16" on GPUs, params stay float32
    c.model.head = ml_collections.ConfigDict()
    c.model.head.pool = "acp"                      # "acp" (concat avg+max) | "gap"
    c.model.head.layers = ((1024, 0.5),)           # buffering FC layers: (units, dropout)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"                           # "sgd" (the paper) | "adamw"
    c.optim.lr = 0.01
    c.optim.momentum = 0.9                         # sgd only
    c.optim.weight_decay = 1e-6                    # sgd: added to the gradient (PyTorch); adamw: decoupled
    c.optim.min_lr = 0.0                           # end of the cosine decay

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32                        # global batch, split over all devices
    c.train.num_epochs = 12
    c.train.loss = "bce"

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64
    c.eval.threshold = 0.5
    c.eval.checkpoint = "best"                     # "best" (validation macro-F1) | "latest" | a step number

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep = 3                          # the last N epochs, plus the best one
    return c
