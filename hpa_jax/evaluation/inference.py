"""Restore a checkpoint, then score the validation fold (`evaluate`) or write a Kaggle
submission for the test images (`predict`)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from hpa_jax.evaluation import metrics

from hpa_jax.evaluation.thresholds import apply_thresholds, cross_fitted_predictions, search_thresholds
from hpa_jax.reporting import outputs, report
from hpa_jax.runtime import checkpoint, distributed, sharding
from hpa_jax.training import optim
from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data import pipeline
from hpa_jax.data.datasets import fold_seed, load_dataset
from hpa_jax.data.folds import stratified_folds
from hpa_jax.errors import ConfigError, DataError, file_errors
from hpa_jax.models import TRACE_SIZE, create_model_from_config, encoder_module_sort_key
from hpa_jax.runtime.sharding import MESH_AXIS
from hpa_jax.training.state import create_train_state


def d4_transform(images: jnp.ndarray, k: int) -> jnp.ndarray:
    """The k-th of the 8 dihedral transforms of (B, H, W, C) images: k % 4 quarter turns, then a
    horizontal flip for k >= 4 (k = 0 is the identity)."""
    images = jnp.rot90(images, k % 4, axes=(1, 2))
    return images[:, :, ::-1] if k >= 4 else images


def make_predict_step(model, config, mesh):
    """jit(shard_map(forward)) in inference mode: (variables, uint8 images) -> float32
    probabilities, averaged over the test-time augmentations `eval.tta` (D4 indices 0..7),
    gathered from all devices and replicated, so that every process holds the whole batch's."""
    mean, std = tuple(config.data.mean), tuple(config.data.std)
    transforms = tuple(int(k) for k in config.eval.tta)
    if not transforms or any(not 0 <= k < 8 for k in transforms):
        raise ConfigError(f"eval.tta={tuple(config.eval.tta)}: expected D4 transform indices in 0..7, e.g. (0,) "
                          f"for none or (0, 1, 2, 3, 4, 5, 6, 7) for all eight")

    def forward(variables, images):
        x = pipeline.normalize(images, mean, std)
        probs = [jax.nn.sigmoid(model.apply(variables, d4_transform(x, k), train=False)) for k in transforms]
        return jax.lax.all_gather(sum(probs) / len(probs), MESH_AXIS, tiled=True)

    return distributed.Together(jax.jit(jax.shard_map(forward, mesh=mesh, in_specs=(P(), P(MESH_AXIS)),
                                                      out_specs=P(), check_vma=False)), "predict step")


def predict_probs(step, variables, mesh, config, source: pipeline.ImageSource, *, desc: str) -> np.ndarray:
    """Probabilities (N, C) for every image of `source`, in order, on every process (each reads
    its share of every batch); `step` is `make_predict_step(...)`, built once per run so that it
    compiles once."""
    batch_size = config.eval.batch_size
    out = []
    batches = pipeline.eval_batches(source, batch_size=batch_size, num_threads=config.data.num_threads,
                                    prefetch=config.data.prefetch, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    total = -(-len(source) // batch_size)
    bar = tqdm(batches, total=total, desc=desc, unit="batch", dynamic_ncols=True, leave=False,
               disable=not distributed.is_primary())
    for b, batch in enumerate(bar):
        probs = sharding.replicated_to_host(step(variables, sharding.put_batch(mesh, batch["image"])))
        out.append(probs[b * batch_size + np.arange(batch_size) < len(source)])
    return np.concatenate(out) if out else np.zeros((0, config.num_classes), np.float32)


def score(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """Validation loss (BCE, probabilities clipped to [1e-7, 1 - 1e-7]), macro-F1 and per-class
    F1 at a fixed threshold."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    preds = probs > threshold
    return {"val_loss": float(bce.mean()), "val_macro_f1": float(metrics.macro_f1(labels, preds)),
            "val_per_class_f1": [round(float(f), 5) for f in metrics.per_class_f1(labels, preds)]}


def training_config(config, workdir) -> ml_collections.ConfigDict:
    """The model, optimiser (its state is in the checkpoint) and input-normalisation settings are
    those the checkpoint was trained with (read from `{workdir}/config.json`), whatever the
    command line says; the rest is as given, `model.grouped_conv` too (it changes how grouped
    convolutions are computed, not the model: a run trained on CPUs predicts with "xla" on GPUs)."""
    saved_path = pathlib.Path(workdir) / "config.json"
    if not saved_path.is_file():
        return config
    with file_errors(saved_path):
        saved = json.loads(saved_path.read_text())
    config = ml_collections.ConfigDict(config.to_dict())
    grouped_conv = config.model.get("grouped_conv", "auto")  # how to compute, not what: the command line's
    config.model = ml_collections.ConfigDict({**saved["model"], "grouped_conv": grouped_conv})
    config.optim = ml_collections.ConfigDict(saved["optim"])
    for key in ("mean", "std", "image_size", "crop_size"):
        config.data[key] = saved["data"][key]
    return config


def abstract_train_state(model, tx, in_channels: int, mesh):
    """The training state's shapes and dtypes, replicated over `mesh`, traced (`jax.eval_shape`)
    without computing or allocating anything: what a checkpoint is restored into, and what
    `--mode=plan` compiles the steps for. Params do not depend on the image size traced."""
    abstract = jax.eval_shape(lambda: create_train_state(model, tx, jax.random.key(0), image_size=TRACE_SIZE,
                                                         in_channels=in_channels))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
                        abstract)


def restore_variables(config, workdir, which):
    """(model, mesh, variables, step) from the checkpoint `which` ('best', 'latest' or a step);
    'best' and 'latest' fall back to the best or newest readable checkpoint."""
    model = create_model_from_config(config)
    mesh = sharding.make_mesh()
    # Only the optimiser state's structure matters here, which the layer groups shape.
    tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr,
                              module_sort_key=encoder_module_sort_key(config.model.name))
    abstract = abstract_train_state(model, tx, config.in_channels, mesh)
    manager = checkpoint.checkpoint_manager(workdir, must_exist=True)
    step, state, _ = checkpoint.restore_readable(manager, which, abstract, with_progress=False)
    return model, mesh, {"params": state.params, "batch_stats": state.batch_stats}, step


def evaluate(config, workdir) -> dict:
    """Scores the restored checkpoint on the validation fold; writes `eval_metrics.json` and a
    `report.md` whose fitted thresholds are fitted on this fold itself (in-sample: use
    `--mode=cv` for an honest estimate)."""
    workdir = pathlib.Path(workdir)
    config = training_config(config, workdir)
    model, mesh, variables, step = restore_variables(config, workdir, config.eval.checkpoint)
    dataset = distributed.primary_first(load_dataset, config)
    train_idx, val_idx = dataset.split(config.data.fold)
    source = dataset.train_source(val_idx, config.data)
    probs = predict_probs(make_predict_step(model, config, mesh), variables, mesh, config, source, desc="evaluate")
    result = {"checkpoint_step": step, "num_images": len(source), "threshold": config.eval.threshold,
              **score(source.labels, probs, config.eval.threshold),
              "label_prior_macro_f1": metrics.label_prior_baseline(dataset.train_labels[train_idx],
                                                                       source.labels, seed=config.seed)}
    result["val_per_class_f1"] = dict(zip(CLASS_NAMES, result["val_per_class_f1"]))
    thresholds, fitted = fitted_scores(source.labels, probs, config.eval.threshold_method, fold_seed(config))
    result["val_macro_f1_fitted_in_sample"] = fitted["val_macro_f1_fitted"]
    result["val_macro_f1_cross_fitted"] = fitted["val_macro_f1_cross_fitted"]
    curves = "training_curves.png" if (workdir / "training_curves.png").is_file() else None
    report.write_report(workdir, title=f"Evaluation of step {step}, fold {config.data.fold}", labels=source.labels,
                        probs=probs, thresholds=thresholds, training_curves=curves,
                        fit_note=f"Thresholds ({config.eval.threshold_method}) fitted on these same images: "
                                 "optimistic; `--mode=cv` gives a cross-fitted estimate.",
                        summary_rows=[("per-class thresholds cross-fitted over two halves of the fold (honest)",
                                      f"{result['val_macro_f1_cross_fitted']:.4f}"),
                                     ("label-prior baseline", f"{result['label_prior_macro_f1']:.4f}")])
    path = outputs.write_json(workdir / "eval_metrics.json", result)
    print(f"evaluate (step {step}) -> {path}")
    for line in headline(result):
        print(line)
    return result


def validation_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """0/1 per validation image: two halves stratified over the classes (iterstrat), so that each
    half's fitted thresholds can be scored on the other."""
    return stratified_folds(labels, 2, seed)


def fitted_scores(labels: np.ndarray, probs: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, dict]:
    """(per-class thresholds fitted on the whole fold, its macro-F1 with them in-sample
    ("val_macro_f1_fitted": what `checkpoint.best_metric=val_macro_f1_fitted` ranks by) and
    cross-fitted over the fold's two halves ("val_macro_f1_cross_fitted": honest))."""
    thresholds, in_sample = search_thresholds(probs, labels, method=method)
    cross = float("nan")     # a fold of one image has no halves
    if len(labels) >= 2:
        crossed = cross_fitted_predictions(probs, labels, validation_halves(labels, seed), method=method)
        cross = float(metrics.macro_f1(labels, crossed))
    return thresholds, {"val_macro_f1_fitted": float(in_sample), "val_macro_f1_cross_fitted": cross}


def headline(result: dict) -> list[str]:
    """evaluate's score as a person should read it: the honest figure next to the ones that flatter
    or undersell, and the score of a model that never looked at an image."""
    cross = result.get("val_macro_f1_cross_fitted")
    rows = [(f"at threshold {result['threshold']}", result["val_macro_f1"], ""),
            ("per-class thresholds, cross-fitted", cross, "honest: fitted on one half of the fold, scored on the "
                                                          "other, both ways"),
            ("per-class thresholds, in-sample", result["val_macro_f1_fitted_in_sample"],
             "optimistic: fitted on the images it scores"),
            ("label-prior baseline", result["label_prior_macro_f1"], "guessing each class at its training rate")]
    lines = [f"validation macro-F1, {result['num_images']} images of the held-out fold, checkpoint step "
             f"{result['checkpoint_step']}:"]
    for name, value, note in rows:
        if value is not None:
            lines.append(f"  {name:<36} {value:.4f}" + (f"  ({note})" if note else ""))
    return lines


def predict(config, workdir) -> pathlib.Path:
    """Writes `submission.csv` (Kaggle format) and `test_probs.npz` (Ids, probabilities)."""
    workdir = pathlib.Path(workdir)
    config = training_config(config, workdir)
    model, mesh, variables, step = restore_variables(config, workdir, config.eval.checkpoint)
    dataset = distributed.primary_first(load_dataset, config)
    if not len(dataset.test_ids):
        raise DataError(f"{dataset.root / 'sample_submission.csv'}: missing or empty; it lists the test Ids")
    source = dataset.test_source(config.data)
    probs = predict_probs(make_predict_step(model, config, mesh), variables, mesh, config, source, desc="predict")
    outputs.save_probs(workdir / "test_probs.npz", dataset.test_ids, probs)
    preds = apply_thresholds(probs, config.eval.threshold, config.eval.force_one)
    path = outputs.write_submission(workdir / "submission.csv", dataset.test_ids, preds)
    print(f"predict (step {step}): {len(source)} test images -> {path}")
    return path
