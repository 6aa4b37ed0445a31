"""A trained run as the one function every format exports (the contract in the package doc), with
the images that check each export against JAX."""

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpa_jax.classes import CLASS_NAMES, NUM_CLASSES
from hpa_jax.data import pipeline
from hpa_jax.data.datasets import load_dataset
from hpa_jax.data.kaggle import resize_image
from hpa_jax.errors import UserError
from hpa_jax.evaluation import inference
from hpa_jax.folder.predict import input_size, run_config, run_thresholds
from hpa_jax.models import create_model_from_config

CHANNELS = ("red (microtubules)", "green (protein)", "blue (nucleus)", "yellow (ER)")
INPUT, OUTPUTS = "images", ("logits", "probabilities")


@dataclasses.dataclass(frozen=True)
class ExportedRun:
    """What an export needs of a run: its model in float32 inference form, the checkpoint's
    variables on the host, the input size, normalisation and thresholds."""

    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    model: object
    variables: dict
    step: int
    checkpoint: str
    size: int
    thresholds: np.ndarray          # (28,)
    threshold_source: str

    @property
    def name(self) -> str:
        return str(self.config.model.name)

    @property
    def head(self) -> str:
        return str(self.config.model.head.pool)

    def forward(self, variables, images):
        """The exported function: float32 (N, 4, S, S) pixel values 0-255 -> (logits, probabilities)."""
        x = pipeline.normalize(jnp.transpose(images, (0, 2, 3, 1)), tuple(self.config.data.mean),
                               tuple(self.config.data.std))
        logits = self.model.apply(variables, x, train=False)
        return logits, jax.nn.sigmoid(logits)

    def function(self):
        """`forward` with this run's variables closed over (constants of the exported graph)."""
        variables = self.variables
        return lambda images: self.forward(variables, images)

    def reference(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """JAX's (logits, probabilities) for NCHW float32 `images`: what each export must reproduce."""
        logits, probs = jax.jit(self.forward)(self.variables, jnp.asarray(images, jnp.float32))
        return np.asarray(logits), np.asarray(probs)

    def input_shape(self, batch="N") -> tuple:
        return (batch, self.config.in_channels, self.size, self.size)

    def contract(self) -> dict:
        """The input/output contract, as written into each export's `export.json`."""
        return {"model": self.name, "head": self.head, "checkpoint": self.checkpoint, "checkpoint_step": self.step,
                "input": {"name": INPUT, "dtype": "float32", "shape": list(self.input_shape()),
                          "layout": "NCHW", "channels": list(CHANNELS),
                          "values": "8-bit pixel values 0-255, resized to the input size by the run's "
                                    f"data.resample={self.config.data.resample!r} rule",
                          "normalisation": {"inside": True, "mean": [v * 255 for v in self.config.data.mean],
                                            "std": [v * 255 for v in self.config.data.std]}},
                "outputs": {"logits": ["N", NUM_CLASSES], "probabilities": ["N", NUM_CLASSES]},
                "sigmoid": "inside: probabilities = sigmoid(logits)",
                "test_time_augmentation": "none (one view)",
                "classes": list(CLASS_NAMES),
                "thresholds": [round(float(t), 6) for t in self.thresholds], "thresholds_from": self.threshold_source}


def load_run(workdir, checkpoint: str | None = None) -> ExportedRun:
    """The run at `workdir` restored for export from `checkpoint` ('best', 'latest', a step; default
    the run's `eval.checkpoint`), its model rebuilt in float32 without collectives."""
    workdir = pathlib.Path(workdir)
    config = run_config(workdir)
    which = checkpoint or config.eval.checkpoint
    _, _, variables, step = inference.restore_variables(config, workdir, which)
    variables = jax.tree.map(lambda v: np.asarray(jax.device_get(v), np.float32), variables)
    if not variables["batch_stats"]:
        variables = {"params": variables["params"]}
    export_config = ml_collections.ConfigDict(config.to_dict())
    export_config.model.dtype = "float32"            # bfloat16 compute is a training speed, not the model
    export_config.model.batch_norm_sync = "device"   # inference reads running statistics: no collectives
    thresholds, source = run_thresholds(workdir, config)
    return ExportedRun(workdir=workdir, config=export_config, model=create_model_from_config(export_config),
                       variables=variables, step=int(step), checkpoint=str(which), size=input_size(config)[0],
                       thresholds=np.broadcast_to(np.asarray(thresholds, np.float32), (NUM_CLASSES,)).copy(),
                       threshold_source=source)


def check_images(run: ExportedRun, count: int = 8) -> tuple[list[str], np.ndarray]:
    """(Ids, float32 NCHW pixel values) of the first `count` images of the run's validation fold,
    as its reader gives them; random pixels, with a note, where the run's data cannot be read here."""
    try:
        dataset = load_dataset(run.config)
        _, val_idx = dataset.split(run.config.data.fold)
        source = dataset.train_source(val_idx[:count], run.config.data)
        images = np.stack([source.image(i) for i in range(len(source))])
        ids = [str(i) for i in dataset.train_ids[val_idx[:count]]]
    except UserError as e:
        print(f"hpa_jax.export: note: the run's validation images cannot be read here ({e}); "
              f"checking on random pixels", file=sys.stderr)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (count, run.size, run.size, run.config.in_channels), dtype=np.uint8)
        ids = [f"random{i}" for i in range(count)]
    if images.shape[1:3] != (run.size, run.size):     # a PNG folder read at its own size, not the Kaggle 512
        images = np.stack([resize_image(image, run.size, run.config.data.resample) for image in images])
    return ids, images.transpose(0, 3, 1, 2).astype(np.float32)


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|: the figure each export's check reports."""
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / scale)
