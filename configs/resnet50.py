"""ResNet50 as in Zhang et al. 2021: ACP 4096 -> FC 1024 (dropout 0.5), 512 crops from 768,
batch 74, cycles of 4 epochs, 3-4 cycles, LRs [1e-2 encoder, 2e-2 head].

Layer-group LRs and warm restarts arrive with the training issue; until then the whole
network uses the encoder LR with one cosine decay over the 12 epochs (3 cycles).
"""

from configs import default


def get_config():
    c = default.get_config()
    c.model.name = "resnet50"
    c.model.head.pool = "acp"
    c.model.head.layers = ((1024, 0.5),)
    c.data.image_size = 768
    c.data.crop_size = 512
    c.train.batch_size = 74
    c.train.num_epochs = 12
    c.optim.lr = 1e-2
    return c
