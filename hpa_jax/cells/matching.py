"""Instances of two label images matched one to one at IoU >= a threshold, and the segmentation
scores that follow (precision, recall, F1, median IoU of the matches), as the HPA 2021
single-cell challenge matched predicted cells to true ones (IoU >= 0.6).

Above IoU 0.5 a match is unique, so no assignment needs solving: the objects of one label image
are disjoint, and an object T with IoU > 0.5 against P shares more than half of T u P, hence more
than half of T, with P; two disjoint objects cannot both do that. Every pair over the threshold is
therefore a match, and counting the pairs is the optimal one-to-one matching (the tests check it
against an exhaustive search).
"""

from typing import NamedTuple, Sequence

import numpy as np


class Matches(NamedTuple):
    """The matched pairs of one image: `true[i]` and `pred[i]` are label numbers, `iou[i]` theirs;
    `num_true` and `num_pred` count the objects (labels > 0) of each image."""

    true: np.ndarray
    pred: np.ndarray
    iou: np.ndarray
    num_true: int
    num_pred: int


def overlaps(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true label, predicted label, IoU) of every pair of objects that share a pixel: sparse, so
    fields of thousands of cells cost one pass over the pixels, not a table of every pair."""
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"label images of different shapes: {true.shape} and {pred.shape}")
    t, p = true.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    both = (t > 0) & (p > 0)
    pairs, shared = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    union = t_area[np.searchsorted(t_ids, pairs[0])] + p_area[np.searchsorted(p_ids, pairs[1])] - shared
    return pairs[0], pairs[1], shared / union


def match(true: np.ndarray, pred: np.ndarray, threshold: float = 0.6) -> Matches:
    """The one-to-one matching of `true`'s objects to `pred`'s at IoU >= `threshold` (> 0.5, where
    it is unique: module doc). Both are label images of one shape, 0 the background."""
    if not 0.5 < threshold <= 1:
        raise ValueError(f"threshold={threshold}: above 0.5 a match is unique; below, an assignment must be solved")
    t, p, iou = overlaps(true, pred)
    keep = iou >= threshold
    count = lambda a: int(np.unique(a[a > 0]).size)   # noqa: E731
    return Matches(t[keep], p[keep], iou[keep], count(np.asarray(true)), count(np.asarray(pred)))


def scores(matches: Sequence[Matches]) -> dict[str, float]:
    """Precision, recall and F1 of the objects pooled over images (matched / predicted, matched /
    true), the median IoU of the matched pairs, and the counts; NaN where a ratio has nothing to count."""
    hits = sum(m.true.size for m in matches)
    num_true, num_pred = sum(m.num_true for m in matches), sum(m.num_pred for m in matches)
    ratio = lambda a, b: a / b if b else float("nan")   # noqa: E731
    ious = np.concatenate([m.iou for m in matches]) if matches else np.zeros(0)
    return {"precision": ratio(hits, num_pred), "recall": ratio(hits, num_true),
            "f1": ratio(2 * hits, num_true + num_pred),
            "median_iou": float(np.median(ious)) if ious.size else float("nan"),
            "matched": hits, "true": num_true, "predicted": num_pred}
