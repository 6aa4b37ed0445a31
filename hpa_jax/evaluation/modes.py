"""`--mode=evaluate` and `--mode=predict`: restore a checkpoint, then score the validation fold or
write a Kaggle submission for the test images. `config` is the one the checkpoint was trained
with (`hpa_jax.config.upgrade.training_config`, which `hpa_jax.main` applies)."""

import pathlib

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data.datasets import fold_seed, load_dataset
from hpa_jax.errors import DataError
from hpa_jax.evaluation.inference import make_predict_step, predict_probs, restore_variables
from hpa_jax.evaluation.metrics import label_prior_baseline
from hpa_jax.evaluation.thresholds import apply_thresholds, report_scores
from hpa_jax.evaluation.validation import fitted_scores, score
from hpa_jax.reporting import outputs, report
from hpa_jax.runtime import distributed
from hpa_jax.runtime.checkpoint import AVERAGED
from hpa_jax.workdir import Workdir


def evaluate(config, workdir) -> dict:
    """Scores the restored checkpoint on the validation fold; writes `eval_metrics.json` and a
    `report.md` whose fitted thresholds are fitted on this fold itself (in-sample: use
    `--mode=cv` for an honest estimate)."""
    workdir = pathlib.Path(workdir)
    model, mesh, variables, step = restore_variables(config, workdir, config.eval.checkpoint)
    dataset = distributed.primary_first(load_dataset, config)
    train_idx, val_idx = dataset.split(config.data.fold)
    source = dataset.train_source(val_idx, config.data)
    probs = predict_probs(make_predict_step(model, config, mesh), variables, mesh, config, source, desc="evaluate")
    result = {"checkpoint": str(config.eval.checkpoint), "checkpoint_step": step, "num_images": len(source),
              "threshold": config.eval.threshold,
              **score(source.labels, probs, config.eval.threshold),
              "label_prior_macro_f1": label_prior_baseline(dataset.train_labels[train_idx], source.labels,
                                                           seed=config.seed)}
    result["val_per_class_f1"] = dict(zip(CLASS_NAMES, result["val_per_class_f1"]))
    thresholds, fitted = fitted_scores(source.labels, probs, config.eval.threshold_method, fold_seed(config))
    result["val_macro_f1_fitted_in_sample"] = fitted["val_macro_f1_fitted"]
    result["val_macro_f1_cross_fitted"] = fitted["val_macro_f1_cross_fitted"]
    run = Workdir(workdir)
    curves = run.training_curves.name if run.training_curves.is_file() else None
    which = checkpoint_name(config.eval.checkpoint, step)
    report.write_report(workdir, title=f"Evaluation of {which}, fold {config.data.fold}",
                        **report_scores(source.labels, probs, thresholds), thresholds=thresholds, training_curves=curves,
                        fit_note=f"Thresholds ({config.eval.threshold_method}) fitted on these same images: "
                                 "optimistic; `--mode=cv` gives a cross-fitted estimate.",
                        summary_rows=[("per-class thresholds cross-fitted over two halves of the fold (honest)",
                                      f"{result['val_macro_f1_cross_fitted']:.4f}"),
                                     ("label-prior baseline", f"{result['label_prior_macro_f1']:.4f}")])
    path = outputs.write_json(run.eval_metrics, result)
    print(f"evaluate ({which}) -> {path}")
    for line in headline(result):
        print(line)
    return result


def checkpoint_name(which, step: int) -> str:
    """How the restored checkpoint is named to people: its step, or the average `--mode=swa` saved."""
    return f"{AVERAGED}, the average up to step {step}" if which == AVERAGED else f"step {step}"


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
    which = checkpoint_name(result.get("checkpoint"), result["checkpoint_step"])
    lines = [f"validation macro-F1, {result['num_images']} images of the held-out fold, checkpoint {which}:"]
    for name, value, note in rows:
        if value is not None:
            lines.append(f"  {name:<36} {value:.4f}" + (f"  ({note})" if note else ""))
    return lines


def predict(config, workdir) -> pathlib.Path:
    """Writes `submission.csv` (Kaggle format) and `test_probs.npz` (Ids, probabilities)."""
    workdir = pathlib.Path(workdir)
    model, mesh, variables, step = restore_variables(config, workdir, config.eval.checkpoint)
    dataset = distributed.primary_first(load_dataset, config)
    if not len(dataset.test_ids):
        raise DataError(f"{dataset.root / 'sample_submission.csv'}: missing or empty; it lists the test Ids")
    source = dataset.test_source(config.data)
    probs = predict_probs(make_predict_step(model, config, mesh), variables, mesh, config, source, desc="predict")
    run = Workdir(workdir)
    outputs.save_probs(run.test_probs, dataset.test_ids, probs)
    preds = apply_thresholds(probs, config.eval.threshold, config.eval.force_one)
    path = outputs.write_submission(run.submission, dataset.test_ids, preds)
    print(f"predict ({checkpoint_name(config.eval.checkpoint, step)}): {len(source)} test images -> {path}")
    return path
