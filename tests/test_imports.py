"""Importing the package does nothing to the importer's process: every module, imported in a
fresh interpreter (as a notebook would, here with the svg backend), leaves matplotlib's backend, Python's unraisable hook,
the absl and asyncio loggers' filters and absl's flag state as they were."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

PROBE = """
import importlib, json, logging, pkgutil, sys
import matplotlib
from absl import flags

def state():
    return {"backend": matplotlib.get_backend(), "unraisablehook": repr(sys.unraisablehook),
            "absl_filters": len(logging.getLogger("absl").filters),
            "asyncio_filters": len(logging.getLogger("asyncio").filters),
            "flags_parsed": flags.FLAGS.is_parsed()}

before = state()
import hpa_jax
names = [m.name for m in pkgutil.walk_packages(hpa_jax.__path__, "hpa_jax.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"before": before, "after": state(), "modules": names}))
"""


def test_importing_every_module_changes_nothing_in_the_process():
    env = {**os.environ, "MPLBACKEND": "svg"}   # not Agg, so that a module switching to Agg shows
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"]
    # the walk reached the rooms, not only the top (a vacuous pass would import nothing)
    rooms = {name.split(".")[1] for name in report["modules"]}
    assert {"training", "evaluation", "reporting", "runtime", "explain", "folder", "cells", "config", "data", "models"} <= rooms
