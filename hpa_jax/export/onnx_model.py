"""`--format=onnx`: the run's function as an ONNX graph (jax2onnx), the batch dynamic, checked in
onnxruntime against JAX.

    session = onnxruntime.InferenceSession("model.onnx")
    logits, probabilities = session.run(None, {"images": images})   # float32 (N, 4, S, S), 0-255
"""

import contextlib
import io
import logging
import pathlib

import numpy as np

from hpa_jax.errors import UserError
from hpa_jax.explain.embeddings import optional_module
from hpa_jax.export.exported import INPUT, OUTPUTS, ExportedRun, relative_difference

FILE = "model.onnx"
OPSET = 21   # onnxruntime 1.20 and later read it (jax2onnx writes reductions in the opset-18 form)


def require(module: str):
    """An export package, or one line saying how to install the `export` extra."""
    found = optional_module(module)
    if found is None:
        raise UserError(f"this format needs {module.split('.')[0]}: pip install -r requirements-export.txt "
                        f"(or pip install 'hpa_jax[export]')")
    return found


def export_onnx(run: ExportedRun, out: pathlib.Path) -> pathlib.Path:
    """Writes `out/model.onnx`: input `images` (N, 4, S, S), outputs `logits` and `probabilities`."""
    jax2onnx = require("jax2onnx")
    onnx = require("onnx")
    # its optional dm_pix plugins fail to import with this jax, each with a logged traceback: not ours to show
    logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):    # the converter prints debugging lines
        proto = jax2onnx.to_onnx(run.function(), [run.input_shape("N")], model_name=f"hpa_jax_{run.name}",
                                 opset=OPSET, input_names=[INPUT], output_names=list(OUTPUTS))
    path = out / FILE
    onnx.save(proto, str(path))
    return path


def run_onnx(path: pathlib.Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) of `images` through onnxruntime on the CPU."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits, probs = session.run(list(OUTPUTS), {INPUT: np.asarray(images, np.float32)})
    return logits, probs


def check_onnx(path: pathlib.Path, images: np.ndarray, reference) -> float:
    """onnxruntime's logits against JAX's (`relative_difference`)."""
    return relative_difference(run_onnx(path, images)[0], reference[0])
