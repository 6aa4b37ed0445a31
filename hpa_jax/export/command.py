"""`python -m hpa_jax.export --workdir=RUN --out=DIR --format=onnx,bioimageio,timm,stablehlo`
(`hpa-jax-export`): the command line of `formats.export_run`. Flags are read before jax is
imported, so `--help` is quick."""

PROG = "hpa_jax.export"


def define_flags() -> None:
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("workdir", None, "A training run's folder (config.json, checkpoints/, thresholds.json).")
    flags.DEFINE_string("out", None, "Folder to export into: one subfolder per format (OUT/onnx, OUT/bioimageio, ...).")
    flags.DEFINE_list("format", ["onnx"], "One or more of onnx, bioimageio, timm, stablehlo, comma-separated.")
    flags.DEFINE_string("checkpoint", None, "best, latest, a step, or swa (--mode=swa's average); "
                        "default: the run's eval.checkpoint.")
    flags.DEFINE_integer("check_images", 8, "Validation images each export is checked on against JAX.", lower_bound=1)
    flags.DEFINE_string("license", "CC-BY-4.0", "SPDX licence of the BioImage.IO package's weights (the HPA images "
                        "themselves are CC BY-SA 3.0).")
    flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
    from absl import app, flags  # noqa: PLC0415

    from hpa_jax.data.datasets import default_cache_dir  # noqa: PLC0415 - after flag parsing: importing jax is slow
    from hpa_jax.errors import one_line_errors  # noqa: PLC0415
    from hpa_jax.export.formats import export_run  # noqa: PLC0415
    from hpa_jax.runtime import startup  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    startup.start_up(default_cache_dir() / "xla")
    with one_line_errors(PROG):
        export_run(f.workdir, f.out, f.format, checkpoint=f.checkpoint, num_images=f.check_images,
                   license_id=f.license)


def cli() -> None:
    """The `hpa-jax-export` console script."""
    from hpa_jax import console  # noqa: PLC0415

    define_flags()
    console.run(main, __name__)
