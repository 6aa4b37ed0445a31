"""Shared defaults: the paper's optimiser and metric, HPA's 28 classes and 4 channels.

Backbone configs start from this and change only what the paper changes for them.
"""

import ml_collections
from ml_collections import config_dict

# Per-channel statistics of the 512 px Kaggle PNGs scaled to [0, 1] (R, G, B, Y), as used
# by the 2018 winner.
HPA_MEAN = (0.0746, 0.0506, 0.0509, 0.0763)
HPA_STD = (0.1228, 0.0857, 0.1299, 0.1194)

# Training sets (`--config=configs/resnet50.py:SETUP`; `data.sources` entries are
# NAME=FORMAT:IMAGES[:CSV], relative to data.dir, see hpa_jax/data/combined.py).
# "kaggle+hpav18" is the paper's: the Kaggle PNGs with the HPAv18 external JPEGs, Kaggle listed
# first so that near-duplicate dropping keeps its copy; data.dir holds the Kaggle layout plus
# hpav18/{Id}_{color}.jpg and HPAv18RBGY_wodpl.csv (the published label file).
TRAINING_SETS = {
    "kaggle": (),
    "kaggle+hpav18": ("kaggle=png:train:train.csv", "hpav18=jpg:hpav18:HPAv18RBGY_wodpl.csv"),
}


def with_training_set(c: ml_collections.ConfigDict, setup: str | None) -> ml_collections.ConfigDict:
    """`c` with `data.sources` set to the named training set (None or "kaggle": the Kaggle images
    alone); the paper's setup also drops near-duplicates across the sources, as the paper did."""
    setup = setup or "kaggle"
    if setup not in TRAINING_SETS:
        raise ValueError(f"unknown training set {setup!r} after the config's ':'; expected one of "
                         f"{', '.join(TRAINING_SETS)}")
    c.data.sources = TRAINING_SETS[setup]
    if setup == "kaggle+hpav18":
        c.data.duplicates = "drop"
    return c


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_classes = 28
    c.in_channels = 4

    c.data = ml_collections.ConfigDict()
    c.data.source = "kaggle"                       # "kaggle" (a folder in the Kaggle layout) | "synthetic"
    c.data.dir = config_dict.placeholder(str)      # required for "kaggle": train.csv, train/, test/, sample_submission.csv
    c.data.format = "png"                          # channel files: "png" (Kaggle) | "tif" (full-size originals) | "jpg" (HPAv18)
    # Training images from several sources, each NAME=FORMAT:IMAGES[:CSV] (paths relative to data.dir),
    # e.g. ("kaggle=png:train", "hpav18=jpg:hpav18:HPAv18RBGY_wodpl.csv"); () = data.dir's train/ + train.csv
    c.data.sources = ()
    c.data.yellow = "mean_rg"                      # jpg: yellow plane from the RGB yellow file: "mean_rg" | "red" | "green"
    c.data.depth16 = "linear"                      # tif: 16 -> 8 bit: "linear" (x / 257) | "percentile" (0.1-99.9% stretch)
    c.data.resample = "linear"                     # resize rule: "linear" | "cubic" | "area" (OpenCV), "lanczos" | "bilinear" | "box" (PIL)
    c.data.image_size = 0                          # resize every image to this square size first; 0 keeps it
    # Packed stores (python -m hpa_jax.data.pack): read P/train (training, validation) and P/test
    # (prediction) instead of decoding channel files; data.dir still gives train.csv and the Ids.
    c.data.packed = config_dict.placeholder(str)
    c.data.crop_size = 512                         # random training crop; evaluation sees the whole image
    c.data.duplicates = "none"                     # near-duplicates by green-channel pHash: "none" | "drop" (paper) | "same_fold"
    c.data.duplicate_distance = 6                  # max Hamming distance of the 64-bit hashes to call two images duplicates
    c.data.duplicate_cache = config_dict.placeholder(str)  # hash cache folder; default: $HPA_JAX_CACHE or ~/.cache/hpa_jax
    c.data.oversample_max_factor = 1               # minority oversampling of the training split: repeat x <= this; 1 = off
    c.data.oversample_target = 0                   # class count the rarest class of a sample is raised towards; 0 = median
    c.data.oversample_rounding = "nearest"         # "nearest" | "stochastic" (seeded)
    c.data.num_folds = 5                           # multi-label stratified folds (iterstrat)
    c.data.fold = 0                                # the fold held out for validation
    c.data.fold_seed = config_dict.placeholder(int)  # seed of the folds; None = seed (fix it to vary seed on one split)
    c.data.mean = HPA_MEAN
    c.data.std = HPA_STD
    c.data.num_threads = config_dict.FieldReference("auto", field_type=object)  # reader threads (per process), or "auto"
    c.data.num_workers = config_dict.FieldReference("auto", field_type=object)  # reader processes; 0 = threads only
    c.data.prefetch = 4                            # batches prepared ahead (at least one a thread)
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.num_train = 1200
    c.data.synthetic.num_test = 300
    c.data.synthetic.image_size = 128
    c.data.synthetic.seed = 0
    c.data.synthetic.varied_cells = False         # cells of a field differ; writes their true masks (cells/, cells.csv)
    c.data.synthetic.cache_dir = config_dict.placeholder(str)  # default: $HPA_JAX_CACHE or ~/.cache/hpa_jax

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet50"
    c.model.width = 64                             # stem width; stage i has width * 2**i (x4 in bottlenecks)
    c.model.dtype = "auto"                         # compute dtype: "auto" (bfloat16 on GPUs and TPUs, float32 on CPUs) | "float32" | "bfloat16" | "float16"; params stay float32
    c.model.batch_norm_sync = "global"             # BatchNorm statistics: "global" (over the whole global batch) | "device" (each device's own, as DDP without SyncBatchNorm)
    c.model.grouped_conv = "auto"                  # grouped convs (SE-ResNeXt): "auto" | "xla" | "block_diagonal" | "split"
    c.model.head = ml_collections.ConfigDict()
    c.model.head.pool = "acp"                      # "acp" (concat avg+max) | "gap"
    c.model.head.layers = ((1024, 0.5),)           # buffering FC layers: (units, dropout)
    c.model.head.batch_norm = False                # BN -> dropout before every FC (the 2018 winner's head)
    c.model.encoder_options = ml_collections.ConfigDict()  # a family's own keywords; backbone configs list theirs
    c.model.pretrained = config_dict.placeholder(str)  # encoder weights from `python -m hpa_jax.models.convert --out DIR`

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"                           # "sgd" (the paper) | "adamw"
    c.optim.lr = 0.01                              # base LR: the last layer group's (the head's)
    c.optim.group_lr_multipliers = (1.0,)          # per layer group, encoder first, head last: [lr/3, lr] is (1/3, 1.0)
    c.optim.momentum = 0.9                         # sgd only
    c.optim.weight_decay = 1e-6                    # sgd: added to the gradient (PyTorch); adamw: decoupled
    c.optim.l1 = 0.0                               # L1 penalty, l1 * sign(p) added to the gradient (GapNet-PL: 1e-7)
    c.optim.schedule = "cosine"                    # "cosine": one decay over the run | "cosine_restarts": cycles (SGDR)
    c.optim.cycle_epochs = 4                       # cosine_restarts: length of the first cycle (PyTorch's T_0)
    c.optim.cycle_mult = 1                         # cosine_restarts: each cycle this many times the last (T_mult)
    c.optim.min_lr = 0.0                           # end of each cosine (eta_min), times the group multiplier
    c.optim.warmup_epochs = 0                      # linear warm-up from 0 to lr first; 0 = none

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32                        # global batch, split over all devices
    c.train.num_epochs = 12
    c.train.steps_per_epoch = 0                    # batches per epoch, the first of each epoch's order; 0 = all (trials, benchmarks)
    c.train.accumulation_steps = 1                 # micro-batches per step (gradient accumulation); must divide the per-device batch
    c.train.reduction = "auto"                     # gradient sum over devices: "auto" (psum on GPUs and TPUs, ordered on CPUs) | "ordered" (same bits on any process split) | "psum" (all-reduce)

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "bce"                            # "bce" | "focal" | "bce+focal" (their sum)
    c.loss.focal_gamma = 2.0
    c.loss.e_alpha = 0.0                           # E-loss class weights (1-a)/(1-a^n_c); 0 = unweighted
    c.loss.normalize_weights = True                # E-loss weights scaled to sum to num_classes
    c.loss.hard_sample_ratio = 1.0                 # hard sampler: backprop the top ceil(ratio * B) losses; 1 = all

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 64
    c.eval.threshold = 0.5
    c.eval.threshold_method = "greedy"             # thresholds fitted by cv/evaluate: "greedy" (paper) | "single" | "label_rate"
    c.eval.force_one = False                       # switch on the most probable class of an image left with no label
    c.eval.tta = (0,)                              # D4 test-time augmentations averaged: (0,) none, (0, ..., 7) all 8
    c.eval.checkpoint = "best"                     # "best" (by checkpoint.best_metric) | "latest" | a step number

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.keep = 3                          # the last N epochs, plus the best one
    # what "best" is: "val_macro_f1_fitted" (per-class thresholds fitted on the validation fold, as
    # evaluate and predict use the model) | "val_macro_f1" (at eval.threshold) | "val_loss". Fitted:
    # a loss that moves probabilities off 0.5 (E-loss, focal) is not penalised for it, and over
    # docs/ablation.md's runs it picked epochs at least as good, cross-fitted, as the other two.
    c.checkpoint.best_metric = "val_macro_f1_fitted"
    c.checkpoint.every_steps = 0                   # also save mid-epoch every N steps, with the data position; 0 = off

    # --mode=swa: the uniform average of the run's last checkpoints, BatchNorm statistics recomputed
    # over one pass of the training images, saved for eval.checkpoint="swa" (the 2018 3rd place: 10 epochs)
    c.swa = ml_collections.ConfigDict()
    c.swa.average = "last_epochs"                  # "last_epochs": the last N epoch ends | "cycle_ends": the last N warm-restart cycle ends
    c.swa.num_checkpoints = 0                      # N; 0 = every one training keeps (the last checkpoint.keep epochs, every cycle end)

    c.lr_find = ml_collections.ConfigDict()        # --mode=lr_find: the LR range test
    c.lr_find.start_lr = 1e-5
    c.lr_find.end_lr = 10.0                        # reached after num_steps unless the loss diverges first
    c.lr_find.num_steps = 100
    c.lr_find.smoothing = 0.98                     # EMA factor of the plotted loss
    c.lr_find.diverge_factor = 4.0                 # stop once the smoothed loss exceeds this x its minimum

    c.plan = ml_collections.ConfigDict()           # --mode=plan: compiled cost, memory and throughput, no training
    c.plan.measure_batch = 1                       # per-device batch of the timed steps on CPUs when the step is costly
    c.plan.measure_size = 256                      # at most this crop side for those steps (scaled by FLOPs); 0 = data.crop_size
    c.plan.measure_steps = 3                       # timed train steps after one warm-up; 0 = do not run the step
    c.plan.data_samples = 16                       # training examples read to time one reader worker
    c.plan.device_memory_gb = 0.0                  # device memory (GiB) to check against; 0 = the local device's
    # Links the step's collectives are timed over (a ring through the slowest link on the way):
    c.plan.devices_per_node = 8                    # devices one fast link (NVLink) joins; more devices cross the network
    c.plan.node_link_gb_s = 450.0                  # GB/s each way per device within a node (H100 SXM NVLink 4: 900 GB/s both ways)
    c.plan.network_gb_s = 50.0                     # GB/s each way per device between nodes (one 400 Gb/s InfiniBand NDR port a GPU)
    c.plan.collective_latency_us = 15.0            # start-up latency of one collective (NCCL on one node ~10 us, across nodes ~25 us)
    return c
