"""Average several models' test probabilities into one Kaggle submission.

`python -m hpa_jax.ensemble --inputs a/test_probs.npz b/test_probs.npz --out DIR` writes
`DIR/submission.csv` and `DIR/ensemble_probs.npz` (and `DIR/thresholds.json` when it fits
thresholds). Inputs are `.npz` files with `ids` (N,) str and `probs` (N, 28), as `predict`
writes them; rows are matched by Id, so the files may list the Ids in any order, but every file
must hold the same Ids. The paper averages cross-validation folds and backbones of different
input sizes; rank averaging suits models whose probabilities are calibrated differently.
"""

import json
import pathlib
import tempfile
import zipfile

import numpy as np
import pandas as pd
from scipy import stats

from hpa_jax.classes import NUM_CLASSES
from hpa_jax.data.kaggle import multi_hot, read_labels_csv
from hpa_jax.errors import DataError
from hpa_jax.evaluation.thresholds import apply_thresholds, search_thresholds
from hpa_jax.reporting import outputs
from hpa_jax.workdir import Workdir

METHODS = ("mean", "weighted", "rank")


def read_probs(path) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,) str, probs (N, C) float32) from one `.npz`, checked: keys, shapes, unique Ids,
    finite values. Pickled (object) arrays are refused rather than unpickled."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise DataError(f"{path}: not a .npz file (as np.savez writes, with arrays ids and probs)") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array; expected a .npz with arrays ids and probs")
    with data:
        missing = {"ids", "probs"} - set(data.files)
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))} (has {', '.join(data.files)})")
        try:
            ids, probs = data["ids"], data["probs"]
        except ValueError:
            raise DataError(f"{path}: ids or probs is a pickled object array; save ids as strings: "
                            "np.savez(path, ids=np.asarray(ids, str), probs=probs)") from None
    if (ids.ndim != 1 or probs.ndim != 2 or len(ids) != len(probs) or probs.shape[1] != NUM_CLASSES
            or not np.issubdtype(probs.dtype, np.number)):
        raise DataError(f"{path}: expected ids (N,) and numeric probs (N, {NUM_CLASSES}), got ids {ids.shape} and "
                        f"probs {probs.shape} {probs.dtype}")
    ids = ids.astype(str)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{path}: duplicate Id {unique[counts > 1][0]!r} ({(counts > 1).sum()} duplicated)")
    if not np.isfinite(probs).all():
        raise DataError(f"{path}: probs has {(~np.isfinite(probs)).sum()} non-finite values")
    return ids, probs.astype(np.float32)


def _some(ids, limit=10) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def check_same_ids(path, ids, reference_path, reference_ids) -> None:
    """One-line DataError naming (up to 10 of) the Ids `path` lacks or adds against the reference."""
    missing = set(reference_ids) - set(ids)
    extra = set(ids) - set(reference_ids)
    if missing or extra:
        parts = ([f"missing {len(missing)} Id(s) of {reference_path}: {_some(missing)}"] if missing else []) + \
                ([f"{len(extra)} Id(s) not in {reference_path}: {_some(extra)}"] if extra else [])
        raise DataError(f"{path}: {'; '.join(parts)}")


def read_aligned(paths) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sorted ids, [probs with rows in that order]) for files that must share one Id set."""
    ids0 = None
    aligned = []
    for path in paths:
        ids, probs = read_probs(path)
        if ids0 is None:
            ids0 = np.sort(ids)
        else:
            check_same_ids(path, ids, paths[0], ids0)
        order = np.argsort(ids)
        aligned.append(probs[order])
    return ids0, aligned


def rank_scale(probs: np.ndarray) -> np.ndarray:
    """Per class, each row's rank among the rows scaled to [0, 1] (ties share their mean rank):
    only the order within a class survives, so differently calibrated models weigh alike."""
    ranks = stats.rankdata(probs, axis=0, method="average")
    return ((ranks - 1) / max(len(probs) - 1, 1)).astype(np.float32)


def combine(probs_list, method: str = "mean", weights=None) -> np.ndarray:
    """Weighted (equal by default) average of the aligned probabilities, or of their ranks."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "rank":
        probs_list = [rank_scale(p) for p in probs_list]
    weights = np.ones(len(probs_list)) if weights is None else np.asarray(weights, np.float64)
    return (np.tensordot(weights / weights.sum(), np.stack(probs_list), axes=1)).astype(np.float32)


def read_thresholds(path) -> np.ndarray:
    """Thresholds from JSON: {"thresholds": [28 numbers] or one number} (as this module writes
    them) or a bare list of 28 numbers."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    value = data.get("thresholds") if isinstance(data, dict) else data
    try:
        thresholds = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        thresholds = np.zeros(0)
    if thresholds.shape not in ((), (NUM_CLASSES,)) or not np.isfinite(thresholds).all():
        raise DataError(f"{path}: expected {{\"thresholds\": [{NUM_CLASSES} numbers]}} or one number, "
                        f"got {json.dumps(value)[:80]}")
    return thresholds


def read_labels_for(path, ids: np.ndarray) -> np.ndarray:
    """(N, C) labels of `ids` from an Id,Target CSV; every Id must be there."""
    frame = read_labels_csv(path).set_index("Id")
    missing = set(ids) - set(frame.index)
    if missing:
        raise DataError(f"{path}: no labels for {len(missing)} Id(s) of the out-of-fold predictions: {_some(missing)}")
    return multi_hot(frame.loc[ids, "labels"])


def read_id_order(path, ids: np.ndarray) -> np.ndarray:
    """The Ids of a sample_submission.csv, which must be exactly the ensemble's Ids."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read CSV ({str(e).splitlines()[0]})") from None
    if "Id" not in frame.columns:
        raise DataError(f"{path}: no Id column (header is {','.join(frame.columns)})")
    order = frame["Id"].to_numpy(str)
    if len(set(order)) != len(order):
        raise DataError(f"{path}: duplicate Ids")
    check_same_ids(path, order, "the ensemble inputs", ids)
    return order


def ensemble_predictions(inputs, *, method="mean", weights=None, threshold=0.5, thresholds_path=None,
                         fit_paths=None, labels_path=None, threshold_method="greedy", sample_submission=None,
                         force_one=False):
    """Everything the command line does short of writing: (ids, probs, preds, fit or None), with
    rows in sample_submission order when given, else sorted by Id. With `fit_paths` (one
    out-of-fold file per input, combined the same way) thresholds are fitted against the labels
    and `fit` describes them (the contents of thresholds.json)."""
    ids, aligned = read_aligned(inputs)
    probs = combine(aligned, method, weights)
    fit = None
    if fit_paths:
        oof_ids, oof = read_aligned(fit_paths)
        labels = read_labels_for(labels_path, oof_ids)
        thresholds, score = search_thresholds(combine(oof, method, weights), labels,
                                                          method=threshold_method)
        fit = {"method": threshold_method, "oof_macro_f1": score, "num_oof": len(oof_ids),
               "thresholds": [float(str(t)) for t in thresholds]}  # shortest decimal giving the same float32
    elif thresholds_path:
        thresholds = read_thresholds(thresholds_path)
    else:
        thresholds = np.float32(threshold)
    if sample_submission:
        order = read_id_order(sample_submission, ids)
        rows = np.searchsorted(ids, order)
        ids, probs = order, probs[rows]
    return ids, probs, apply_thresholds(probs, thresholds, force_one), fit


def write_outputs(out, ids, probs, preds, fit) -> pathlib.Path:
    """Writes the files into a temporary folder inside `out`, then renames them into place,
    so a failed run leaves neither a half-written file nor half of the set."""
    out = pathlib.Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out, prefix=".ensemble-") as tmp:
            tmp = pathlib.Path(tmp)
            np.savez(tmp / "ensemble_probs.npz", ids=np.asarray(ids, str), probs=probs)
            outputs.write_submission(Workdir(tmp).submission, ids, preds)
            if fit:   # as --mode=cv writes a run's thresholds, which hpa_jax.predict applies
                Workdir(tmp).thresholds.write_text(json.dumps(fit, indent=2) + "\n")
            for path in sorted(tmp.iterdir()):
                path.replace(out / path.name)
    except OSError as e:
        raise DataError(f"{out}: cannot write the outputs ({e.strerror or e})") from None
    return Workdir(out).submission
