"""Training: the state pytree (`state`), optimiser and schedules (`optim`), losses and the hard
sampler (`losses`), the sharded train step (`step`), the epoch loop (`loop`), and the modes that
train: cross-validation (`cv`), the LR range test (`lr_finder`) and the compile-only plan (`plan`)."""
