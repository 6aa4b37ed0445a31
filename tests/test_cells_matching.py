"""Instance matching at IoU >= a threshold (`hpa_jax.cells.matching`) against an exhaustive search
over every one-to-one assignment, with IoUs counted from boolean masks; and the scores."""

import itertools
import math

import numpy as np
import pytest

from hpa_jax.cells import matching


def _brute_force(true: np.ndarray, pred: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """The largest set of (true, pred) pairs, each object in at most one, all at IoU >= threshold."""
    t_ids = [int(v) for v in np.unique(true) if v]
    p_ids = [int(v) for v in np.unique(pred) if v]
    iou = {(a, b): ((true == a) & (pred == b)).sum() / ((true == a) | (pred == b)).sum() for a in t_ids for b in p_ids}
    best: dict = {}
    for chosen in itertools.permutations(p_ids + [None] * len(t_ids), len(t_ids)):
        pairs = {(a, b): iou[a, b] for a, b in zip(t_ids, chosen) if b is not None and iou[a, b] >= threshold}
        if len(pairs) > len(best):
            best = pairs
    return best


def _random_labels(rng, size: int, count: int, base=None) -> np.ndarray:
    """Up to `count` overlapping rectangles, later ones on top, numbered with gaps; or `base`'s
    objects' boxes with each edge moved by up to 1 px (a segmentation of it)."""
    out = np.zeros((size, size), np.int32)
    boxes = []
    if base is None:
        for _ in range(count):
            y, x = rng.integers(0, size - 2, 2)
            boxes.append((y, x, y + rng.integers(3, 9), x + rng.integers(3, 9)))
    else:
        for k in np.unique(base)[1:]:
            ys, xs = np.nonzero(base == k)
            jitter = rng.integers(-1, 2, 4)
            boxes.append((ys.min() + jitter[0], xs.min() + jitter[1],
                          ys.max() + 1 + jitter[2], xs.max() + 1 + jitter[3]))
    for number, (y0, x0, y1, x1) in zip(rng.permutation(np.arange(1, 40))[:len(boxes)] * 3, boxes):
        out[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = number
    return out


@pytest.mark.parametrize("threshold", [0.51, 0.6, 0.75])
def test_matching_equals_the_exhaustive_search(threshold):
    rng = np.random.default_rng(0)
    matched = 0
    for _ in range(200):
        true = _random_labels(rng, 16, rng.integers(0, 5))
        if rng.random() < 0.7:
            pred = _random_labels(rng, 16, 0, base=true)                  # a segmentation of true
        else:
            pred = _random_labels(rng, 16, rng.integers(0, 5))            # unrelated objects
        got = matching.match(true, pred, threshold)
        want = _brute_force(true, pred, threshold)
        assert dict(zip(zip(got.true.tolist(), got.pred.tolist()), got.iou.tolist())) == pytest.approx(want)
        assert got.num_true == len(np.unique(true[true > 0])) and got.num_pred == len(np.unique(pred[pred > 0]))
        matched += len(want)
    assert matched > 30, "the random cases hold matches to find"


def test_a_hand_made_case():
    """True 1 (4 px) against pred 5 (4 px, 3 shared: IoU 3/5) and pred 6; true 2 (2 px) exactly pred 7."""
    true = np.array([[1, 1, 0, 2],
                     [1, 1, 0, 2]])
    pred = np.array([[5, 5, 6, 7],
                     [5, 0, 6, 7]])
    got = matching.match(true, pred)
    assert got.true.tolist() == [1, 2] and got.pred.tolist() == [5, 7]
    np.testing.assert_allclose(got.iou, [3 / 4, 1.0])
    assert (got.num_true, got.num_pred) == (2, 3)
    s = matching.scores([got])
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert s["median_iou"] == pytest.approx(0.875)
    assert matching.match(true, pred, 0.8).pred.tolist() == [7]


def test_scores_pool_the_images_and_say_nan_when_there_is_nothing():
    a = matching.match(np.array([[1, 2]]), np.array([[1, 0]]))       # 1 of 2 true found, 1 predicted
    b = matching.match(np.array([[0, 0]]), np.array([[0, 4]]))       # 1 false positive
    s = matching.scores([a, b])
    assert (s["matched"], s["true"], s["predicted"]) == (1, 2, 2)
    assert (s["precision"], s["recall"], s["f1"], s["median_iou"]) == pytest.approx((0.5, 0.5, 0.5, 1.0))
    empty = matching.scores([matching.match(np.zeros((2, 2)), np.zeros((2, 2)))])
    assert all(math.isnan(empty[k]) for k in ("precision", "recall", "f1", "median_iou"))


def test_refusals():
    with pytest.raises(ValueError, match="above 0.5 a match is unique"):
        matching.match(np.zeros((2, 2)), np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="label images of different shapes"):
        matching.match(np.zeros((2, 2)), np.zeros((2, 3)))
