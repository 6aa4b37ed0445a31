"""Per-cell mean average precision, as the HPA 2021 single-cell challenge scored its entries.

Every predicted cell carries a score for every class. For class c, the (cell, score) pairs of all
fields are ranked by score; a pair is a true positive when the cell matches a true cell (IoU >= 0.6,
`matching.match`, the OpenImages instance-segmentation rule) that carries c, else a false positive;
true cells that carry c and that no predicted cell matches are missed (they count in the recall's
denominator only). Above IoU 0.5 a true cell matches at most one predicted cell, so no true cell
is counted twice. A class's AP is the area under its precision-recall curve with the precision made
non-increasing (each point's precision the best at that recall or beyond), OpenImages' and
PASCAL VOC's rule. The mAP is the mean over the classes that some true cell carries.

The classes are this package's 28 and Negative (a cell that shows none of them; the 2021 challenge
had 18 locations and Negative). A model of the 28 gives no Negative score of its own; a cell's is
1 - its highest class score (`with_negative`): high when the model sees nothing in the cell.
"""

from typing import Mapping, Sequence

import numpy as np

from hpa_jax.cells.matching import match
from hpa_jax.classes import CLASS_NAMES

MATCH_IOU = 0.6
NEGATIVE = len(CLASS_NAMES)                 # the Negative column's index in `with_negative`'s scores
METRIC_CLASSES = (*CLASS_NAMES, "Negative")


def with_negative(scores: np.ndarray) -> np.ndarray:
    """(n, 29): the (n, 28) class scores and a Negative column, 1 - the cell's highest score."""
    scores = np.asarray(scores, np.float64).reshape(-1, len(CLASS_NAMES))
    return np.concatenate([scores, 1 - scores.max(axis=1, initial=0)[:, None]], axis=1)


def field_hits(true: np.ndarray, true_classes: Mapping[int, Sequence[int]], pred: np.ndarray,
               numbers: Sequence[int], threshold: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """One field's part of the metric: (hits, positives). `true` and `pred` are its label images,
    `true_classes[k]` true cell k's classes (empty: Negative), `numbers` the predicted cells in the
    order of their score rows. hits (len(numbers), 29) bool: row i, column c is a true positive of
    class c (column 28 Negative). positives (29,) int: the true cells that carry each class."""
    numbers = np.asarray(numbers, np.int64)
    positives = np.zeros(len(METRIC_CLASSES), np.int64)
    carries = {}
    for k in np.unique(np.asarray(true)[np.asarray(true) > 0]):
        row = np.zeros(len(METRIC_CLASSES), bool)
        row[list(true_classes.get(int(k), ())) or [NEGATIVE]] = True
        carries[int(k)] = row
        positives += row
    hits = np.zeros((len(numbers), len(METRIC_CLASSES)), bool)
    found = match(true, pred, threshold)
    row_of = {int(k): i for i, k in enumerate(numbers)}
    for t, p in zip(found.true, found.pred):
        if int(p) in row_of:
            hits[row_of[int(p)]] = carries[int(t)]
    return hits, positives


def average_precision(scores: np.ndarray, hits: np.ndarray, positives: int) -> float:
    """One class's AP: `scores` (n,) of the predicted cells, `hits` (n,) which are true positives,
    `positives` the true cells carrying the class (NaN when none does). Tied scores are ranked
    together (one point of the curve for the whole tie), so the order of the rows does not matter."""
    if positives <= 0:
        return float("nan")
    scores, hits = np.asarray(scores, np.float64), np.asarray(hits, bool)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1] if len(scores) else np.zeros(0, np.int64)
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]         # best precision at this recall or beyond
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * precision))


def mean_average_precision(scores: np.ndarray, hits: np.ndarray, positives: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP, (29,) per-class APs, NaN for classes no true cell carries) of all fields' pooled
    rows: `scores` and `hits` (N, 29), `positives` (29,) summed over the fields."""
    ap = np.array([average_precision(scores[:, c], hits[:, c], positives[c]) for c in range(len(METRIC_CLASSES))])
    return (float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")), ap
