"""`python -m hpa_jax.ensemble --inputs a/test_probs.npz b/test_probs.npz --out DIR` (`hpa-jax-ensemble`):
flags and dispatch; `hpa_jax.evaluation.ensemble` combines the files (its docstring says how).

The list flags take their values comma-separated (absl's `--inputs=a.npz,b.npz`) or spaced
(`--inputs a.npz b.npz`).
"""

import functools
import sys

from absl import app, flags

from hpa_jax import console
from hpa_jax.errors import one_line_errors
from hpa_jax.evaluation.ensemble import METHODS, ensemble_predictions, write_outputs
from hpa_jax.evaluation.thresholds import THRESHOLD_METHODS
from hpa_jax.workdir import Workdir

PROG = "hpa_jax.ensemble"
LISTS = ("inputs", "weights", "fit_thresholds")   # spaced values gathered (console.spaced_lists)


def define_flags() -> None:
    """The command line's flags and their checks; defined only when run as a program."""
    flags.DEFINE_list("inputs", None, "Test-probability .npz files (ids, probs).")
    flags.DEFINE_list("weights", None, "One positive weight per input (--method=weighted or rank).")
    flags.DEFINE_enum("method", "mean", METHODS, "mean, weighted mean, or mean of per-class ranks scaled to [0, 1].")
    flags.DEFINE_float("threshold", None, "One threshold for every class (default 0.5).")
    flags.DEFINE_string("thresholds", None, "JSON file with per-class thresholds.")
    flags.DEFINE_list("fit_thresholds", None, "Out-of-fold .npz files, one per input in the same order, to fit "
                      "thresholds on (with --labels).")
    flags.DEFINE_string("labels", None, "Id,Target CSV with the labels of the out-of-fold Ids.")
    flags.DEFINE_enum("threshold_method", "greedy", THRESHOLD_METHODS,
                      "How --fit_thresholds fits them (see search_thresholds).")
    flags.DEFINE_string("sample_submission", None, "CSV whose Id column gives the submission's rows and order.")
    flags.DEFINE_bool("force_one", False, "Give every image at least its most probable class.")
    flags.DEFINE_string("out", None, "Folder for submission.csv and ensemble_probs.npz.")
    flags.mark_flags_as_required(["inputs", "out"])
    flags.mark_flags_as_mutual_exclusive(["threshold", "thresholds", "fit_thresholds"])
    for names, problem in RULES:
        flags.register_multi_flags_validator(names, functools.partial(_check, problem))


# What must hold between the flags: (the flags, what is wrong with their values or a false value).
# absl checks them after parsing, in this order, and reports the first that fails as one line.
RULES = (
    (["inputs"], lambda v: v["inputs"] == [] and "--inputs needs at least one file"),
    (["inputs", "weights"], lambda v: v["weights"] is not None and len(v["weights"]) != len(v["inputs"] or [])
     and f"--weights has {len(v['weights'])} values for {len(v['inputs'] or [])} --inputs"),
    (["weights"], lambda v: v["weights"] is not None and not all(map(_positive, v["weights"]))
     and "--weights must be positive"),
    (["method", "weights"], lambda v: (v["method"] == "weighted" and v["weights"] is None
                                       and "--method=weighted needs --weights")
     or (v["method"] == "mean" and v["weights"] is not None and "--weights needs --method=weighted or --method=rank")),
    (["inputs", "fit_thresholds"], lambda v: bool(v["fit_thresholds"])
     and len(v["fit_thresholds"]) != len(v["inputs"] or [])
     and f"--fit_thresholds has {len(v['fit_thresholds'])} files for {len(v['inputs'] or [])} --inputs"),
    (["fit_thresholds", "labels"], lambda v: bool(v["fit_thresholds"]) != bool(v["labels"])
     and "--fit_thresholds and --labels go together"),
)


def _check(problem, values: dict) -> bool:
    message = problem(values)
    if message:
        raise flags.ValidationError(message)
    return True


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    weights = None if f.weights is None else [float(w) for w in f.weights]
    with one_line_errors(PROG):
        ids, probs, preds, fit = ensemble_predictions(
            f.inputs, method=f.method, weights=weights, threshold=0.5 if f.threshold is None else f.threshold,
            thresholds_path=f.thresholds, fit_paths=f.fit_thresholds, labels_path=f.labels,
            threshold_method=f.threshold_method, sample_submission=f.sample_submission, force_one=f.force_one)
        path = write_outputs(f.out, ids, probs, preds, fit)
    if fit:
        print(f"thresholds ({fit['method']}) fitted on {fit['num_oof']} out-of-fold images: macro-F1 "
              f"{fit['oof_macro_f1']:.4f} -> {Workdir(f.out).thresholds}")
    print(f"ensemble ({f.method}) of {len(f.inputs)} files: {len(ids)} images -> {path}")


def cli():
    """The `hpa-jax-ensemble` console script, as `python -m hpa_jax.ensemble`."""
    define_flags()
    console.run(main, __name__, argv=console.spaced_lists(sys.argv, LISTS))


if __name__ == "__main__":
    cli()
