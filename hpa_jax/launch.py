"""`python -m hpa_jax.launch --num_processes=N -- <hpa_jax.main's flags>` (`hpa-jax-launch`):
N local processes of `hpa_jax.main` joined by `jax.distributed`, as N hosts would be.

Flags and dispatch; `hpa_jax.runtime.launch` starts the processes, forwards their output with a
`[pK]` prefix and stops them all when one fails. Everything after `--` goes to each process's
`hpa_jax.main`, with its `--coordinator_address`, `--num_processes` and `--process_id` added.
"""

from absl import app, flags

from hpa_jax import console
from hpa_jax.runtime.launch import launch

EXAMPLE = "-- --config=configs/quickstart.py --workdir=runs/mp"


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (`hpa_jax.main` has a
    `--num_processes` of its own)."""
    flags.DEFINE_integer("num_processes", None, "How many processes to start.", lower_bound=1)
    flags.DEFINE_integer("devices_per_process", None, "Simulated CPU devices per process (sets "
                         "JAX_NUM_CPU_DEVICES); default: as the environment says.", lower_bound=1)
    flags.DEFINE_integer("port", 0, "Coordinator port on localhost (0: a free one).", lower_bound=0)
    flags.DEFINE_float("grace", 20.0, "Seconds the others get to stop by themselves once one process failed, "
                       "before they are killed.", lower_bound=0)
    flags.mark_flags_as_required(["num_processes"])


def main(argv):
    main_args = argv[1:]
    if not main_args:
        raise app.UsageError(f"give hpa_jax.main's flags after --, e.g. {EXAMPLE}")
    f = flags.FLAGS
    return launch(f.num_processes, main_args, devices_per_process=f.devices_per_process, port=f.port,
                  grace=f.grace)


def cli():
    """The `hpa-jax-launch` console script, as `python -m hpa_jax.launch`."""
    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
