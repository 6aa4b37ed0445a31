"""`python -m hpa_jax.ensemble --inputs a/test_probs.npz b/test_probs.npz --out DIR` (`hpa-jax-ensemble`):
flags and dispatch; `hpa_jax.evaluation.ensemble` combines the files (its docstring says how)."""

import pathlib

from absl import app
from absl.flags import argparse_flags

from hpa_jax.errors import one_line_errors
from hpa_jax.evaluation.thresholds import THRESHOLD_METHODS, search_thresholds
from hpa_jax.evaluation.ensemble import METHODS, ensemble_predictions, write_outputs


def parse_flags(argv):
    parser = argparse_flags.ArgumentParser(prog="python -m hpa_jax.ensemble", description="Average several models' test probabilities into one Kaggle submission.")
    parser.add_argument("--inputs", nargs="+", required=True, help="test-probability .npz files (ids, probs)")
    parser.add_argument("--weights", nargs="+", type=float, help="one positive weight per input (weighted, rank)")
    parser.add_argument("--method", choices=METHODS, default="mean",
                        help="mean, weighted mean, or mean of per-class ranks scaled to [0, 1]")
    fixed = parser.add_mutually_exclusive_group()
    fixed.add_argument("--threshold", type=float, help="one threshold for every class (default 0.5)")
    fixed.add_argument("--thresholds", help="JSON file with per-class thresholds")
    fixed.add_argument("--fit_thresholds", nargs="+",
                       help="out-of-fold .npz files, one per input in the same order, to fit thresholds on")
    parser.add_argument("--labels", help="Id,Target CSV with the labels of the out-of-fold Ids")
    parser.add_argument("--threshold_method", choices=THRESHOLD_METHODS, default="greedy",
                        help="how --fit_thresholds fits them (see search_thresholds)")
    parser.add_argument("--sample_submission", help="CSV whose Id column gives the submission's rows and order")
    parser.add_argument("--force_one", action="store_true", help="give every image at least its most probable class")
    parser.add_argument("--out", required=True, help="folder for submission.csv and ensemble_probs.npz")
    args = parser.parse_args(argv[1:])
    if args.weights is not None and len(args.weights) != len(args.inputs):
        parser.error(f"--weights has {len(args.weights)} values for {len(args.inputs)} --inputs")
    if args.weights is not None and min(args.weights) <= 0:
        parser.error("--weights must be positive")
    if args.method == "weighted" and args.weights is None:
        parser.error("--method=weighted needs --weights")
    if args.method == "mean" and args.weights is not None:
        parser.error("--weights needs --method=weighted or --method=rank")
    if args.fit_thresholds and len(args.fit_thresholds) != len(args.inputs):
        parser.error(f"--fit_thresholds has {len(args.fit_thresholds)} files for {len(args.inputs)} --inputs")
    if bool(args.fit_thresholds) != bool(args.labels):
        parser.error("--fit_thresholds and --labels go together")
    return args


def main(args):
    with one_line_errors("hpa_jax.ensemble"):
        ids, probs, preds, fit = ensemble_predictions(
            args.inputs, method=args.method, weights=args.weights,
            threshold=0.5 if args.threshold is None else args.threshold, thresholds_path=args.thresholds,
            fit_paths=args.fit_thresholds, labels_path=args.labels, threshold_method=args.threshold_method,
            sample_submission=args.sample_submission, force_one=args.force_one)
        path = write_outputs(args.out, ids, probs, preds, fit)
    if fit:
        print(f"thresholds ({fit['method']}) fitted on {fit['num_oof']} out-of-fold images: macro-F1 "
              f"{fit['oof_macro_f1']:.4f} -> {pathlib.Path(args.out) / 'thresholds.json'}")
    print(f"ensemble ({args.method}) of {len(args.inputs)} files: {len(ids)} images -> {path}")


def cli():
    """The `hpa-jax-ensemble` console script."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    cli()
