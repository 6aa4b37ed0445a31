"""One run exported in the asked formats, each into its own folder of `--out` and checked there
against JAX on the run's validation images before the folder gets its name."""

import dataclasses
import json
import pathlib
import shutil
import time

import numpy as np

from hpa_jax.errors import UserError
from hpa_jax.export import bioimageio_package, onnx_model, stablehlo, timm_weights
from hpa_jax.explain.embeddings import optional_module
from hpa_jax.export.exported import ExportedRun, check_images, load_run

FORMATS = ("onnx", "bioimageio", "timm", "stablehlo")
CONTRACT = "export.json"
TOLERANCE = 1e-4   # a relative difference above this is a broken export, not rounding


@dataclasses.dataclass
class Result:
    """One format's folder, files and checks (what `--format` prints and `export.json` records)."""

    format: str
    folder: pathlib.Path
    files: list
    checks: dict
    seconds: float

    def line(self) -> str:
        size = sum(f.stat().st_size for f in self.files) / 2 ** 20
        checks = "; ".join(f"{name} {value:.1e}" if isinstance(value, float) else f"{name} {value}"
                           for name, value in self.checks.items())
        return f"  {self.format:<11}{self.folder} ({', '.join(f.name for f in self.files)}, {size:.1f} MiB, " \
               f"{self.seconds:.0f} s): {checks}"


def _within(name: str, difference: float, where: pathlib.Path) -> float:
    if not np.isfinite(difference) or difference > TOLERANCE:
        raise UserError(f"{where}: {name} differs from JAX by {difference:.2e} relative (more than {TOLERANCE:g}): "
                        f"the export is not the model")
    return difference


def _export_one(fmt: str, run: ExportedRun, folder: pathlib.Path, images, reference, license_id: str,
                converted: dict) -> tuple:
    """(files, checks) of one format written into `folder`; `converted` {format: file} of this run's
    earlier formats."""
    differences = f"vs JAX on {len(images)} image(s), logits, max relative difference"
    if fmt == "onnx":
        path = onnx_model.export_onnx(run, folder)
        return [path], {f"onnxruntime {differences}": _within("onnxruntime", onnx_model.check_onnx(
            path, images, reference), path)}
    if fmt == "bioimageio":
        weights = folder / onnx_model.FILE
        if converted.get("onnx"):           # the same graph the onnx format wrote in this run: not converted twice
            shutil.copyfile(converted["onnx"], weights)
        else:
            onnx_model.export_onnx(run, folder)
        difference = _within("onnxruntime", onnx_model.check_onnx(weights, images, reference), weights)
        rdf = bioimageio_package.write_package(run, folder, images, reference, license_id)
        status = bioimageio_package.check_package(rdf)
        return sorted(folder.iterdir()), {f"onnxruntime {differences}": difference, "bioimageio.core test": status}
    if fmt == "timm":
        paths = timm_weights.export_timm(run, folder)
        if not timm_weights.round_trip_exact(run, paths[0]):
            raise UserError(f"{paths[0]}: the state dict does not convert back to the run's variables")
        checks = {"converts back to the checkpoint": "exactly"}
        if optional_module("torch") is None or optional_module("timm") is None:
            checks["timm"] = "not run (torch and timm are not installed here)"
        else:
            checks[f"timm {differences}"] = _within("timm", timm_weights.check_timm(run, paths, images, reference),
                                                    paths[0])
        return paths, checks
    path = stablehlo.export_stablehlo(run, folder)
    return [path], {f"jax.export reloaded {differences}": _within("jax.export", stablehlo.check_stablehlo(
        path, images, reference), path)}


def export_run(workdir, out, formats, *, checkpoint: str | None = None, num_images: int = 8,
               license_id: str = "CC-BY-4.0", say=print) -> list[Result]:
    """Exports the run at `workdir` in each of `formats` to `out/<format>/`, each with the
    contract (`export.json`) beside its files; a format's folder appears only once its files
    are written and checked (it is built under a hidden name, removed on any error)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format={','.join(formats)}: expected one or more of {', '.join(FORMATS)}")
    out = pathlib.Path(out)
    taken = [str(out / f) for f in formats if (out / f).exists()]
    if taken:
        raise UserError(f"{', '.join(taken)}: already exists; choose another --out or remove it")
    needs = {"onnx": ("jax2onnx", "onnx", "onnxruntime"), "bioimageio": ("jax2onnx", "onnx", "onnxruntime",
                                                                        "bioimageio.core")}
    for module in sorted({m for f in formats for m in needs.get(f, ())}):
        onnx_model.require(module)          # a missing package stops it before anything is read or written
    run = load_run(workdir, checkpoint)
    if "timm" in formats:
        timm_weights.check_exportable(run)
    say(f"hpa_jax.export: {run.name} ({run.head} head), checkpoint {run.checkpoint} (step {run.step}), "
        f"input (N, {run.config.in_channels}, {run.size}, {run.size}) float32 pixel values 0-255")
    ids, images = check_images(run, num_images)
    reference = run.reference(images)
    results, converted = [], {}
    for fmt in formats:
        folder, partial = out / fmt, out / f".{fmt}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        start = time.perf_counter()
        try:
            files, checks = _export_one(fmt, run, partial, images, reference, license_id, converted)
            contract = {**run.contract(), "format": fmt, "files": [f.name for f in files], "checks": checks,
                        "checked_on": ids}
            (partial / CONTRACT).write_text(json.dumps(contract, indent=1) + "\n")
            partial.rename(folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        result = Result(fmt, folder, [folder / f.name for f in files], checks, time.perf_counter() - start)
        converted[fmt] = folder / onnx_model.FILE if fmt == "onnx" else None
        say(result.line())
        results.append(result)
    return results
