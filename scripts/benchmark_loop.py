"""`scripts/benchmark.py loop`: what the training loop costs on top of its jitted train step.

The same host batches (uint8 images, labels, D4 codes, made once in memory) are trained on twice
from the same state: by the bare step (`step.make_train_step`'s program called back to back on
batches already on the devices, one wait at the end) and by the loop's own `loop.run_epoch` (it
puts each host batch on the devices, dispatches the step, reads the metrics back and checks them).
The model is small (the quickstart's narrow ResNet18 at a small crop), so the step is short and
whatever the host adds shows. A rate is images over wall time, the best of `--repeats`; the
loop's overhead is 1 - loop / bare. On a GPU the host's share matters more (the step is faster
and the host's work the same), so `scripts/benchmark.py gpu` measures it there too.

    python scripts/benchmark.py loop [--steps 200] [--crop 32] [--batch 8] [--label "after"]
"""

import pathlib

import jax

from hpa_jax.config.shipped import load
from hpa_jax.reporting.performance import area_main, machine, merge_rows, section_body, table_rows
from hpa_jax.training.overhead import loop_overhead, small_config

REPO = pathlib.Path(__file__).resolve().parents[1]
HEADER = "| code | model, crop, global batch | devices | bare step images/s | loop images/s | loop overhead |"


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=200, help="timed steps per pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each; the best is kept")
    parser.add_argument("--crop", type=int, default=32, help="crop side of the batches")
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--label", default="this commit", help="what the row measures (kept rows of other labels)")
    parser.add_argument("--doc", type=pathlib.Path, default=REPO / "docs" / "performance.md")


def run(args) -> str:
    config = small_config(load("quickstart").get_config(), args.crop, args.batch, **{"model.dtype": "float32"})
    result = loop_overhead(config, args.steps, args.repeats)
    row = (f"| {args.label} | {config.model.name} width {config.model.width}, {args.crop} px, {args.batch} | "
           f"{jax.device_count()} {jax.default_backend()} | {result['bare']:,.0f} | {result['loop']:,.0f} | "
           f"{result['overhead']:.1%} |")
    rows = merge_rows(table_rows(section_body(args.doc, "loop")), [row])
    return "\n".join([
        f"The training loop (`loop.run_epoch`: puts each host batch on the devices, dispatches the step, "
        f"reads the metrics back) against the bare jitted train step on the same {args.steps} in-memory "
        f"batches, best of {args.repeats} passes, on {machine()}. `python scripts/benchmark.py loop "
        f"--label LABEL` keeps the rows of other labels.", "", HEADER, "|---|---|---|---|---|---|", *rows])


def main(argv=None):
    area_main("loop", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
