"""`--mode=cv`: K-fold cross-validation with an honest estimate of the fitted-threshold score.

Thresholds searched on the data they are scored on overfit it (several 2018 teams saw their
searched thresholds lose to a fixed 0.3 on the test set). So besides the usual in-sample figure,
each fold is also scored with thresholds fitted on the other folds' out-of-fold predictions.
"""

import pathlib

import numpy as np

from hpa_jax.data.datasets import load_dataset
from hpa_jax.evaluation import inference, metrics
from hpa_jax.evaluation.thresholds import apply_thresholds, cross_fitted_predictions, report_scores, search_thresholds
from hpa_jax.reporting import outputs, report
from hpa_jax.runtime import distributed
from hpa_jax.training import loop
from hpa_jax.workdir import Workdir


def fold_predictions(config, fold_dir: pathlib.Path, dataset, fold: int):
    """(validation probs, test probs or None) of the fold's `eval.checkpoint` checkpoint; `config` is
    the one the fold was just trained (or resumed) with."""
    model, mesh, variables, _ = inference.restore_variables(config, fold_dir, config.eval.checkpoint)
    step = inference.make_predict_step(model, config, mesh)
    _, val_idx = dataset.split(fold)
    val = dataset.train_source(val_idx, config.data)
    val_probs = inference.predict_probs(step, variables, mesh, config, val, desc=f"fold {fold} validation")
    test_probs = None
    if len(dataset.test_ids):
        test_probs = inference.predict_probs(step, variables, mesh, config, dataset.test_source(config.data),
                                             desc=f"fold {fold} test")
    return val_probs, test_probs


def cross_fitted_scores(probs, labels, folds, method: str) -> list[dict]:
    """Per fold: macro-F1 at 0.5, with thresholds fitted on the fold itself (in-sample), and with
    thresholds fitted on all other folds (cross-fitted)."""
    rows = []
    crossed = cross_fitted_predictions(probs, labels, folds, method=method)
    for fold in np.unique(folds):
        inside = folds == fold
        _, in_sample = search_thresholds(probs[inside], labels[inside], method=method)
        cross = metrics.macro_f1(labels[inside], crossed[inside])
        rows.append({"fold": int(fold), "images": int(inside.sum()),
                     "f1_at_0.5": float(metrics.macro_f1(labels[inside], probs[inside] > 0.5)),
                     "in_sample": float(in_sample), "cross_fitted": float(cross)})
    return rows


def cross_validate(config, workdir) -> dict:
    """Trains every fold into `workdir/fold{k}` (resuming finished or interrupted folds), writes
    out-of-fold and per-fold test probabilities, fits thresholds on all out-of-fold predictions
    and writes `report.md`, `thresholds.json` and a fold-averaged `submission.csv`."""
    run = Workdir(workdir)
    run.path.mkdir(parents=True, exist_ok=True)
    dataset = distributed.primary_first(load_dataset, config)
    num_folds, method = config.data.num_folds, config.eval.threshold_method
    oof = np.zeros(dataset.train_labels.shape, np.float32)
    test_probs = []
    for fold in range(num_folds):
        fold_config = config.copy_and_resolve_references()
        fold_config.data.fold = fold
        fold_dir = run.fold(fold)
        print(f"cv: fold {fold + 1}/{num_folds} -> {fold_dir.path}")
        loop.train_and_evaluate(fold_config, fold_dir.path)
        val_probs, fold_test = fold_predictions(fold_config, fold_dir.path, dataset, fold)
        val_idx = dataset.split(fold)[1]
        oof[val_idx] = val_probs
        outputs.save_probs(fold_dir.val_probs, dataset.train_ids[val_idx], val_probs)
        if fold_test is not None:
            outputs.save_probs(fold_dir.test_probs, dataset.test_ids, fold_test)
            test_probs.append(fold_test)

    labels = dataset.train_labels
    outputs.save_probs(run.oof_probs, dataset.train_ids, oof)
    thresholds, oof_fitted = search_thresholds(oof, labels, method=method)
    fold_rows = cross_fitted_scores(oof, labels, dataset.folds, method)
    fit = {"method": method, "oof_macro_f1": oof_fitted, "num_oof": len(oof),
           "thresholds": [float(str(t)) for t in thresholds]}
    outputs.write_json(run.thresholds, fit)
    cross = float(np.mean([r["cross_fitted"] for r in fold_rows]))
    report.write_report(
        run.path, title=f"Cross-validation, {num_folds} folds", **report_scores(labels, oof, thresholds),
        thresholds=thresholds,
        fit_note=f"Out-of-fold predictions of every training image; thresholds ({method}) fitted on all of them.",
        summary_rows=[("fitted, cross-fitted per fold (mean)", f"{cross:.4f}"),
                      ("label-prior baseline", f"{metrics.label_prior_baseline(labels, labels, config.seed):.4f}")],
        fold_rows=fold_rows, training_curves=run.fold(0).training_curves.relative_to(run.path).as_posix())
    result = {"oof_macro_f1_at_0.5": float(metrics.macro_f1(labels, oof > 0.5)),
              "oof_macro_f1_fitted_in_sample": oof_fitted, "macro_f1_fitted_cross_fitted": cross, "folds": fold_rows}
    if test_probs:
        mean_test = np.mean(test_probs, axis=0)
        outputs.save_probs(run.test_probs, dataset.test_ids, mean_test)
        outputs.write_submission(run.submission, dataset.test_ids,
                                 apply_thresholds(mean_test, thresholds, config.eval.force_one))
    print(f"cv: out-of-fold macro-F1 {result['oof_macro_f1_at_0.5']:.4f} at 0.5, {oof_fitted:.4f} with thresholds "
          f"fitted in-sample, {cross:.4f} cross-fitted -> {run.report}")
    return result
