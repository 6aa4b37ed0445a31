"""`--format=stablehlo`: the run's function serialised by `jax.export` (StableHLO with its
calling convention), the variables inside it as constants, the batch left symbolic.

    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    logits, probabilities = exported.call(images)     # float32 (N, 4, S, S), pixel values 0-255
"""

import pathlib

import jax
import numpy as np

from hpa_jax.export.exported import ExportedRun, relative_difference

FILE = "model.stablehlo"


def export_stablehlo(run: ExportedRun, out: pathlib.Path) -> pathlib.Path:
    """Writes `out/model.stablehlo`, serialised for the CPU and CUDA platforms."""
    batch, = jax.export.symbolic_shape("N")
    spec = jax.ShapeDtypeStruct(run.input_shape(batch), np.float32)
    exported = jax.export.export(jax.jit(run.function()), platforms=("cpu", "cuda"))(spec)
    path = out / FILE
    path.write_bytes(exported.serialize())
    return path


def check_stablehlo(path: pathlib.Path, images: np.ndarray, reference) -> float:
    """The reloaded export's logits against JAX's (`relative_difference`)."""
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    logits, _ = exported.call(images)
    return relative_difference(np.asarray(logits), reference[0])
