"""What every command that runs JAX sets once its flags are parsed, not at import, so that
importing the package changes nothing in the importer's process."""

import os

import jax
from absl import flags, logging

from hpa_jax.runtime.checkpoint import quiet_orbax


# XLA's GPU convolutions and scatters pick the fastest algorithm, some of which add in a varying
# order; with this flag they take deterministic ones (slower: README's "Reproducibility").
DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def start_up(cache_dir, *, deterministic_gpu: bool = False) -> None:
    """absl's verbosity at WARNING unless `--verbosity` was given (at INFO orbax logs every file it
    touches), orbax's messages of a failed save or restore left to our one line
    (`checkpoint.quiet_orbax`), and XLA's compilation cache in `cache_dir` unless
    `JAX_COMPILATION_CACHE_DIR` names one. `deterministic_gpu` (a run that asked for
    `train.reduction="ordered"`, bit-reproducible results) adds `DETERMINISTIC_GPU_FLAG` to
    `XLA_FLAGS`, before any backend starts (CPUs ignore it)."""
    if deterministic_gpu and DETERMINISTIC_GPU_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DETERMINISTIC_GPU_FLAG}".strip()
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    quiet_orbax()
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        # Compiled programs are reused across runs, folds and modes (minutes for a full-size model on a GPU).
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    if "JAX_THREEFRY_PARTITIONABLE" not in os.environ:
        # Parameters are initialised replicated, never sharded, so the partitionable threefry buys
        # nothing here, and XLA compiles a model's initialisers about 4x faster without it.
        jax.config.update("jax_threefry_partitionable", False)
