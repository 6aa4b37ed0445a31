"""Command line: `python -m hpa_jax.main --config=configs/quickstart.py --workdir=runs/x --mode=train`.

Parses flags, checks the config once (`hpa_jax.config.validate`) and dispatches; every
`--config.a.b=v` overrides one config field.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from hpa_jax import console
from hpa_jax.config import command_line, shipped
from hpa_jax.errors import one_line_errors

MODES = ("train", "swa", "evaluate", "predict", "lr_find", "cv", "plan")
RESTORING = ("swa", "evaluate", "predict")   # the modes that run a trained checkpoint

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and predictions.")
flags.DEFINE_list("mode", ["train"], f"One or more of {', '.join(MODES)}, comma-separated, run in order.")
flags.DEFINE_enum("distributed", "", ["", "off", "auto"],
                  "Multi-process runtime (jax.distributed): '' starts it when --coordinator_address (or "
                  "JAX_COORDINATOR_ADDRESS) is given; 'auto' takes the processes from the cluster (Slurm, Open MPI, "
                  "Kubernetes); 'off' never starts it.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator (all processes give the same).")
flags.DEFINE_integer("num_processes", None, "How many processes take part (JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 to num_processes - 1 (JAX_PROCESS_ID).")
flags.DEFINE_integer("initialization_timeout", 300, "Seconds to wait for every process to reach the coordinator.")
flags.DEFINE_integer("heartbeat_timeout", 60, "Seconds without a heartbeat after which a process counts as dead "
                     "and the others stop with an error.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    unknown = [m for m in FLAGS.mode if m not in MODES]
    if unknown:
        raise app.UsageError(f"unknown --mode {','.join(unknown)}; expected {', '.join(MODES)}")
    import jax  # after flag parsing: importing jax is slow

    from hpa_jax.config.devices import fit_to_devices
    from hpa_jax.config.upgrade import training_config
    from hpa_jax.config.validate import validate
    from hpa_jax.data.datasets import default_cache_dir
    from hpa_jax.evaluation import modes
    from hpa_jax.runtime import distributed, startup
    from hpa_jax.training import averaging, cv, loop, lr_finder, plan

    # a run asking for the ordered reduction wants the same bits every time: on GPUs, that takes XLA's
    # deterministic kernels too (set before any backend starts)
    startup.start_up(default_cache_dir() / "xla",
                     deterministic_gpu=FLAGS.config.get("train", {}).get("reduction") == "ordered")

    with one_line_errors("hpa_jax"):
        distributed.initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               initialization_timeout=FLAGS.initialization_timeout,
                               heartbeat_timeout=FLAGS.heartbeat_timeout)
    run = {"train": loop.train_and_evaluate, "swa": averaging.average, "evaluate": modes.evaluate,
           "predict": modes.predict, "lr_find": lr_finder.lr_find, "cv": cv.cross_validate, "plan": plan.plan}
    with distributed.exit_promptly(), one_line_errors(f"hpa_jax{distributed.label()}"), distributed.lost_peers(), \
            distributed.quiet_unless_primary():
        command_line.check_workdir(FLAGS.workdir)
        # The one check of the config, before any work: as given for the modes that train or plan (a
        # plan needs no data); evaluate and predict take the model, optimiser and input settings from
        # the run's config.json, so theirs is checked once merged, before each restores anything.
        # A batch the devices do not divide (the paper's 74 on 8 GPUs) is rounded, with one line.
        # With swa among the modes, training must keep the checkpoints it averages.
        given = [mode for mode in FLAGS.mode if mode not in RESTORING]
        fitted = fit_to_devices(FLAGS.config, jax.device_count())
        averaging = "swa" in FLAGS.mode
        if given:
            validate(fitted, jax.device_count(), needs_data=given != ["plan"], averaging=averaging)
        results = {}
        for mode in FLAGS.mode:
            config = fitted
            if mode in RESTORING:
                config = fit_to_devices(training_config(config, FLAGS.workdir), jax.device_count())
                validate(config, jax.device_count(), needs_data=True, averaging=averaging)
            results[mode] = run[mode](config, FLAGS.workdir)
            distributed.barrier(f"after {mode}")
        if "evaluate" in results and FLAGS.mode[-1] != "evaluate":
            for line in modes.headline(results["evaluate"]):   # the score, last, where a person looks
                print(line)


def cli():
    """The `hpa-jax` console script, as `python -m hpa_jax.main`; `--config=configs/NAME.py` also
    works outside the checkout (the configs shipped with the package, `config.shipped`)."""
    sys.argv = shipped.resolve_argv(sys.argv)
    console.run(main, __name__, flags_parser=command_line.parse_flags)


if __name__ == "__main__":
    cli()
