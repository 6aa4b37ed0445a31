"""`scripts/benchmark.py collectives`: the paper's configs on 8 and 16 (simulated) devices: each
plans and trains a step, and what its train step sends between devices.

Every run is README's `python -m hpa_jax.main --config=configs/NAME.py --mode=plan` on this CPU
with `--xla_force_host_platform_device_count` devices, the paper's batch as given (a batch the
devices do not divide is rounded, as on a GPU box). Two tables:
- every paper config at width 8 (`model.width`), one timed train step (`plan.measure_steps=1`):
  the global batch it ran, the collectives per step and the bytes each device sends;
- ResNet50 and SE-ResNeXt50 at full width for each gradient reduction (`train.reduction`) and
  BatchNorm sync (`model.batch_norm_sync`), compiled, not run: collectives by kind, bytes a
  device sends per step, and the time those take at `plan.*`'s link speeds (NVLink within a node
  of 8, InfiniBand between nodes), as `--mode=plan` reports them (`hpa_jax.runtime.interconnect`).
Rows of another `--label` are kept (the code before a change, measured from its own checkout).

    python scripts/benchmark.py collectives [--devices 8,16] [--configs resnet50,senet]
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from hpa_jax.config.shipped import load
from hpa_jax.reporting.performance import (area_main, machine, merge_rows, run_main, section_body, subsections,
                                           table_rows)

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_CONFIGS = ("resnet50", "resnet101", "senet", "densenet", "inception_v4", "gapnet")
VARIANTS = (("ordered", "global"), ("psum", "global"), ("psum", "device"))
TINY_HEADER = "| config | devices | global batch (paper's) | collectives per step | a device sends | step ran |"
FULL_HEADER = ("| code | model | devices | reduction | BatchNorm sync | collectives per step | a device sends "
               "| link time |")


def add_arguments(parser):
    parser.add_argument("--devices", default="8,16", help="comma-separated simulated device counts")
    parser.add_argument("--configs", default=",".join(PAPER_CONFIGS), help="configs of the width-8 table")
    parser.add_argument("--full", default="resnet50,senet", help="configs compiled at full width")
    parser.add_argument("--label", default="this commit", help="the code measured (the full-width table's first cell)")
    parser.add_argument("--checkout", type=pathlib.Path, default=REPO,
                        help="the checkout whose code the full-width table compiles (e.g. an older commit's)")
    parser.add_argument("--variants", default=",".join(f"{r}/{s}" for r, s in VARIANTS),
                        help="REDUCTION/SYNC pairs of the full-width table")
    parser.add_argument("--doc", type=pathlib.Path, default=REPO / "docs" / "performance.md")


def plan(name: str, devices: int, tmp: pathlib.Path, *overrides: str) -> dict:
    workdir = tmp / f"{name}-{devices}-{abs(hash(overrides))}"
    run_main([f"--config=configs/{name}.py", f"--workdir={workdir}", "--mode=plan", *overrides], devices,
             tmp / "cache", REPO)
    return json.loads((workdir / "plan.json").read_text())


# Run in the checkout measured (`--checkout`, default this one), with this checkout's
# `hpa_jax/runtime/interconnect.py` loaded by path, so older code is read by the same parser.
PROBE = """
import importlib.util, json, sys
import jax
from hpa_jax.config.shipped import load
from hpa_jax.runtime import sharding
from hpa_jax.training import plan
from hpa_jax.training.state import abstract_train_state
from hpa_jax.training.step import make_train_step
spec = importlib.util.spec_from_file_location("interconnect", sys.argv[1])
interconnect = importlib.util.module_from_spec(spec); spec.loader.exec_module(interconnect)
name, reduction, sync = sys.argv[2:5]
config = load(name).get_config()
config.train.reduction = reduction
if sync != "global":
    config.model.batch_norm_sync = sync
mesh = sharding.make_mesh()
per_device = -(-config.train.batch_size // mesh.size)
config.train.batch_size, config.data.crop_size = per_device * mesh.size, 64
model, tx = plan.model_and_optimizer(config)
state = abstract_train_state(model, tx, config.in_channels, mesh)
step = make_train_step(config, mesh, plan.stand_in_class_weights(config))
text = step.jitted.lower(state, *plan.abstract_batch(config, mesh, config.train.batch_size, 64),
                         plan.abstract_key(mesh)).compile().as_text()
found = interconnect.summary(interconnect.collectives(text, mesh.size))
found["link"] = interconnect.link_seconds(found["bytes_sent"], found["count"], mesh.size, devices_per_node=8,
                                          node_link_gb_s=450.0, network_gb_s=50.0, latency_us=15.0)
print("RESULT " + json.dumps(found))
"""


def probe(checkout: pathlib.Path, name: str, devices: int, reduction: str, sync: str) -> dict:
    """The full-width train step's collectives as compiled by the code in `checkout`."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(checkout),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "hpa_jax" / "runtime" / "interconnect.py"),
                             name, reduction, sync], cwd=checkout, env=env, capture_output=True, text=True)
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result.returncode or line is None:
        raise RuntimeError(f"probe of {name} in {checkout} failed:\n{result.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def kinds_text(c: dict) -> str:
    return ", ".join(f"{v['count']} {kind}" for kind, v in c["kinds"].items()) or "none"


def megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def run(args) -> str:
    counts = [int(d) for d in args.devices.split(",")]
    tiny, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for name in filter(None, args.configs.split(",")):
            for devices in counts:
                print(f"{name} on {devices} devices, width 8", flush=True)
                result = plan(name, devices, tmp, "--config.model.width=8", "--config.plan.measure_steps=1")
                c, t, m = result["collectives"], result["train_step"], result["measured"]
                paper = load(name).get_config().train.batch_size
                tiny.append(f"| {name} | {devices} | {t['global_batch']} ({paper}) | {kinds_text(c)} | "
                            f"{megabytes(c['bytes_sent'])} | {m['steps']} step(s), {m['step_seconds']:.2f} s |")
        for name in filter(None, args.full.split(",")):
            for devices in counts:
                for variant in args.variants.split(","):
                    reduction, sync = variant.split("/")
                    print(f"{name} on {devices} devices, {reduction}, {sync} BatchNorm", flush=True)
                    c = probe(args.checkout, name, devices, reduction, sync)
                    full.append(f"| {args.label} | {name} | {devices} | {reduction} | {sync} | {kinds_text(c)} | "
                                f"{megabytes(c['bytes_sent'])} | {c['link']['seconds'] * 1e3:.1f} ms "
                                f"({c['link']['link']}) |")
    old = subsections(section_body(args.doc, "collectives"))
    old_tiny = table_rows(next((text for head, text in old.items() if head.startswith("### Every")), ""))
    tiny = tiny or old_tiny
    kept = table_rows(next((text for head, text in old.items() if head.startswith("### Full width")), ""))
    if full:   # a new measurement of this label replaces its rows
        kept = [r for r in kept if not r.startswith(f"| {args.label} |")]
    full = merge_rows(kept, full, key_cells=5)
    return "\n".join([
        f"README's `--mode=plan` per paper config on {', '.join(map(str, counts))} simulated CPU devices, on "
        f"{machine()}. Bytes: what one device sends (and receives) per step under ring algorithms; link time: "
        "those bytes at 450 GB/s (NVLink, 8 devices a node) or 50 GB/s (InfiniBand NDR, more than 8) plus "
        "15 us a collective, no overlap with compute (`plan.*` changes them).", "",
        "### Every paper config: plans and trains a step (width 8)", "",
        *([TINY_HEADER, "|---|---|---|---|---|---|", *tiny] if tiny else
          ["Not measured yet: `python scripts/benchmark.py collectives --full=` runs this table alone (about 2.5 "
           "minutes a row on 2 cores)."]), "",
        "### Full width: the train step's collectives by gradient reduction and BatchNorm sync", "",
        "Compiled at 64 px (collectives and their bytes do not depend on the image size). `before` rows: the "
        "code before BatchNorm took one collective each way (a mean, then a variance: two each way) and before "
        "`train.reduction=\"auto\"`, measured from its own checkout with the same programs.", "",
        FULL_HEADER, "|---|---|---|---|---|---|---|---|", *full])


def main(argv=None):
    area_main("collectives", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
