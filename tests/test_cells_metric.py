"""The 2021 challenge's per-cell mAP (`hpa_jax.cells.metric`): AP against a brute force over every
score threshold, and a field's true positives against IoUs counted from boolean masks."""

import numpy as np
import pytest

from hpa_jax.cells import metric
from hpa_jax.classes import CLASS_NAMES


def _brute_force_ap(scores, hits, positives) -> float:
    """Each distinct score as a threshold (keep the cells scoring at least it): its recall and
    precision; the AP is the area under recall of the best precision reached at that recall or
    higher, a step function integrated between the thresholds' recalls."""
    points = []
    for t in np.unique(scores):
        kept = scores >= t
        tp = int(hits[kept].sum())
        points.append((tp / positives, tp / int(kept.sum())))
    area, previous = 0.0, 0.0
    for r in sorted({r for r, _ in points}):
        area += (r - previous) * max(p for rr, p in points if rr >= r)
        previous = r
    return area


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_matches_a_brute_force_over_thresholds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    scores = np.round(rng.random(n), int(rng.integers(1, 3)))     # one or two decimals: ties
    hits = rng.random(n) < 0.4
    positives = int(hits.sum()) + int(rng.integers(0, 4))         # some true cells never found
    if positives == 0:
        positives = 1
    assert metric.average_precision(scores, hits, positives) == pytest.approx(_brute_force_ap(scores, hits, positives))
    shuffled = rng.permutation(n)
    assert metric.average_precision(scores[shuffled], hits[shuffled], positives) == pytest.approx(
        metric.average_precision(scores, hits, positives))


def test_average_precision_by_hand():
    # ranked: hit, miss, hit of 3 true cells: precision 1 up to recall 1/3, 2/3 up to recall 2/3, none beyond
    assert metric.average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 3) == pytest.approx(
        1 / 3 + 1 / 3 * 2 / 3)
    assert metric.average_precision(np.array([0.5, 0.5]), np.array([1, 0], bool), 1) == pytest.approx(0.5)   # a tie
    assert np.isnan(metric.average_precision(np.array([0.3]), np.array([False]), 0))


def _box(shape, y0, x0, y1, x1, value, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[y0:y1, x0:x1] = value
    return out


def test_field_hits_follow_the_iou_of_each_pair():
    shape = (40, 40)
    true = _box(shape, 0, 0, 10, 10, 1)
    _box(shape, 0, 20, 10, 30, 2, true)
    _box(shape, 20, 0, 30, 10, 3, true)
    _box(shape, 20, 20, 30, 30, 4, true)
    true_classes = {1: (0, 25), 2: (), 3: (7,), 4: (0,)}      # cell 2: Negative; cell 4 never predicted
    pred = _box(shape, 0, 0, 10, 10, 5)                        # cell 1 exactly
    _box(shape, 0, 21, 10, 31, 6, pred)                        # cell 2 shifted by 1 px: IoU 9/11
    _box(shape, 20, 3, 30, 13, 7, pred)                        # cell 3 shifted by 3 px: IoU 7/13 < 0.6
    _box(shape, 34, 34, 40, 40, 8, pred)                       # nothing there
    numbers = [8, 7, 6, 5]
    hits, positives = metric.field_hits(true, true_classes, pred, numbers)
    for i, p in enumerate(numbers):                            # the reference: IoUs of boolean masks
        ious = {t: ((true == t) & (pred == p)).sum() / ((true == t) | (pred == p)).sum() for t in true_classes}
        t, iou = max(ious.items(), key=lambda item: item[1])
        expected = np.zeros(len(CLASS_NAMES) + 1, bool)
        if iou >= 0.6:
            expected[list(true_classes[t]) or [metric.NEGATIVE]] = True
        np.testing.assert_array_equal(hits[i], expected)
    assert hits[3, [0, 25]].all() and hits[2, metric.NEGATIVE] and not hits[1].any() and not hits[0].any()
    expected_positives = np.zeros(len(CLASS_NAMES) + 1, int)
    expected_positives[[0, 25, 7, metric.NEGATIVE]] = 1
    expected_positives[0] = 2
    np.testing.assert_array_equal(positives, expected_positives)


def test_with_negative_and_the_map_of_perfect_and_image_level_scores():
    shape = (20, 40)
    true = _box(shape, 0, 0, 20, 20, 1)
    _box(shape, 0, 20, 20, 40, 2, true)
    true_classes = {1: (3,), 2: ()}
    hits, positives = metric.field_hits(true, true_classes, true, [1, 2])
    perfect = np.zeros((2, len(CLASS_NAMES)))
    perfect[0, 3] = 0.9
    scores = metric.with_negative(perfect)
    np.testing.assert_allclose(scores[:, metric.NEGATIVE], [0.1, 1.0])
    value, ap = metric.mean_average_precision(scores, hits, positives)
    assert value == 1.0 and np.isfinite(ap).sum() == 2
    # every cell given its field's probabilities: cell 2 ties cell 1 on class 3 (precision 1/2), and
    # both score 0.1 for Negative, so cell 2's Negative is found at precision 1/2 too
    field = metric.with_negative(np.repeat(perfect[:1], 2, axis=0))
    value, ap = metric.mean_average_precision(field, hits, positives)
    assert ap[3] == pytest.approx(0.5) and ap[metric.NEGATIVE] == pytest.approx(0.5) and value == pytest.approx(0.5)
