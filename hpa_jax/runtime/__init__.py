"""What keeps a run going on many devices, hosts and failures: `jax.distributed` start-up
(`distributed`), the device mesh and batch placement (`sharding`), SIGTERM and Ctrl-C
(`preemption`), orbax checkpoints (`checkpoint`), the local N-process launcher (`launch`), and
what a command sets up once its flags are parsed (`startup`)."""
