"""`--format=bioimageio`: a BioImage.IO model package (what deepImageJ, ilastik and the napari
plugins read): `rdf.yaml` in the current model format (0.5), the ONNX weights, a test input and
its output from a real validation image, channel and class names, the run's thresholds (under
`config.hpa_jax`), a cover drawn from the image's class activation map, and a README from the
run's report. `bioimageio.core`'s own test (the description validated, the test input re-run
against the test output) is run on the folder before the export says it is done.
"""

import pathlib
import re

import jax
import numpy as np
import yaml
from PIL import Image

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data import pipeline
from hpa_jax.errors import UserError
from hpa_jax.export.exported import CHANNELS, INPUT, OUTPUTS, ExportedRun
from hpa_jax.export.onnx_model import OPSET, require
from hpa_jax.explain import gradcam, maps
from hpa_jax.workdir import Workdir

RDF, README, COVER = "rdf.yaml", "README.md", "cover.png"
TEST_INPUT, TEST_OUTPUTS = "test_input.npy", {name: f"test_output_{name}.npy" for name in OUTPUTS}
PAPER = {"text": "Zhang et al., Multi-labelled proteins recognition for high-throughput microscopy images using "
                 "deep convolutional neural networks, BMC Bioinformatics 22:327 (2021)",
         "doi": "10.1186/s12859-021-04196-3"}


def identifier(name: str) -> str:
    """A class or channel name as the format's identifiers allow: `Nuclear membrane` -> `nuclear_membrane`."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def cover(run: ExportedRun, image: np.ndarray, path: pathlib.Path) -> pathlib.Path:
    """A 2:1 cover: the image as HPA shows it, and the same with the class activation map of its
    most probable class over it (of the most probable one with any positive map: Grad-CAM is 0
    where a class has no evidence; the image twice for an encoder without a map, GapNet-PL)."""
    pixels = np.asarray(image, np.float32).transpose(1, 2, 0)             # (S, S, 4) 0-255
    rgb = maps.composite(pixels.astype(np.uint8))
    encoder_vars, head_vars = gradcam.split_variables(run.variables)
    x = pipeline.normalize(jax.numpy.asarray(pixels[None]), tuple(run.config.data.mean), tuple(run.config.data.std))
    fmap = run.model.encoder.apply(encoder_vars, x, train=False)
    heat = rgb
    if fmap.shape[1:3] != (1, 1):
        cams = np.asarray(gradcam.grad_cam(run.model, head_vars, fmap))[0]      # (C, h, w)
        logits = np.asarray(run.model.head.apply(head_vars, fmap, train=False))[0]
        shown = [c for c in np.argsort(-logits) if cams[c].max() > 0]   # the most probable class with a map
        if shown:
            heat = maps.overlay(rgb, cams[shown[0]])
    side = 256
    panel = [np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.BILINEAR)) for a in (rgb, heat)]
    Image.fromarray(np.concatenate(panel, axis=1)).save(path)
    return path


def readme(run: ExportedRun) -> str:
    """The package's documentation: what the model is, its input and output, then the run's
    evaluation report when it has one."""
    lines = [f"# hpa_jax {run.name}: protein localisation in Human Protein Atlas images", "",
             f"A {run.name} encoder with the `{run.head}` head, trained by hpa_jax (a JAX/Flax reimplementation of "
             f"{PAPER['text']}), checkpoint `{run.checkpoint}` (step {run.step}).", "",
             "## Input and output", "",
             f"- `{INPUT}`: float32 (batch, 4, {run.size}, {run.size}), channels " + ", ".join(CHANNELS)
             + ", 8-bit pixel values 0-255 resized to the input size; the model normalises them itself.",
             "- `logits` and `probabilities` (batch, 28): one column per class, probabilities = sigmoid(logits), "
             "one view (no test-time augmentation).",
             f"- A class is predicted where its probability exceeds its threshold (`config.hpa_jax.thresholds` in "
             f"rdf.yaml, from {run.threshold_source}).", ""]
    report = Workdir(run.workdir).report
    if report.is_file():
        lines += ["## The run's evaluation report", "", report.read_text().replace("\n# ", "\n### ")]
    return "\n".join(lines) + "\n"


def description(run: ExportedRun, license_id: str) -> dict:
    """The rdf.yaml content (model format 0.5)."""
    space = [{"type": "space", "id": axis, "size": run.size} for axis in ("y", "x")]
    classes = [identifier(name) for name in CLASS_NAMES]
    outputs = [{"id": name, "description": f"{name}, one per class",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": classes}],
                "data": {"type": "float32"}, "test_tensor": {"source": TEST_OUTPUTS[name]}} for name in OUTPUTS]
    return {
        "type": "model", "format_version": require("bioimageio.spec.model.v0_5").ModelDescr.implemented_format_version,
        "name": f"hpa_jax {run.name} protein localisation",
        "description": f"Multi-label protein localisation (28 classes) of 4-channel HPA fluorescence images: "
                       f"{run.name} with the {run.head} head, trained with hpa_jax.",
        "authors": [{"name": "hpa_jax"}], "cite": [PAPER], "license": license_id,
        "documentation": {"source": README}, "covers": [{"source": COVER}],
        "tags": ["fluorescence-light-microscopy", "classification", "human-protein-atlas", "protein-localisation",
                 "onnx", "2d"],
        "inputs": [{"id": INPUT, "description": "R, G, B, Y 8-bit pixel values (0-255) as float32",
                    "axes": [{"type": "batch"},
                             {"type": "channel", "channel_names": [identifier(c.split()[0]) for c in CHANNELS]},
                             *space],
                    "data": {"type": "float32"}, "test_tensor": {"source": TEST_INPUT}}],
        "outputs": outputs,
        "weights": {"onnx": {"source": "model.onnx", "opset_version": OPSET}},
        "config": {"hpa_jax": run.contract()},
    }


def write_package(run: ExportedRun, out: pathlib.Path, images: np.ndarray, reference,
                  license_id: str = "CC-BY-4.0") -> pathlib.Path:
    """Writes the package's files beside `out/model.onnx` (which `onnx_model.export_onnx` wrote):
    the test tensors are the first check image and JAX's outputs for it."""
    np.save(out / TEST_INPUT, images[:1].astype(np.float32))
    for name, value in zip(OUTPUTS, reference):
        np.save(out / TEST_OUTPUTS[name], np.asarray(value[:1], np.float32))
    cover(run, images[0], out / COVER)
    (out / README).write_text(readme(run))
    path = out / RDF
    path.write_text(yaml.safe_dump(description(run, license_id), sort_keys=False, allow_unicode=True))
    return path


def check_package(path: pathlib.Path) -> str:
    """`bioimageio.core.test_model` on the written package: its status ("passed"), or a
    UserError with the first failed check."""
    core = require("bioimageio.core")
    from loguru import logger  # noqa: PLC0415 - bioimageio's logger: its progress lines are not ours

    logger.disable("bioimageio")
    summary = core.test_model(path)
    if summary.status != "passed":
        failed = [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors][:2]
        raise UserError(f"{path}: bioimageio.core's test did not pass: " + "; ".join(failed or [str(summary.status)]))
    return str(summary.status)
