"""Threshold search against an independent brute force, and the alternatives it offers."""

import numpy as np
import pytest

from hpa_jax import postprocess
from hpa_jax.classes import KAGGLE_TRAIN_COUNTS

C = 28


def brute_macro_f1(labels, preds):
    """Macro-F1 from per-class counts; a class with nothing true or predicted scores 0."""
    tps, fps, fns = (labels & preds).sum(0), (~labels & preds).sum(0), (labels & ~preds).sum(0)
    total = 0.0
    for tp, fp, fn in zip(tps.tolist(), fps.tolist(), fns.tolist()):
        total += 0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return total / labels.shape[1]


def brute_greedy(probs, labels, coarse, fine, max_passes=10):
    """The paper's procedure as written: every candidate rescored on the full macro-F1."""
    coarse, fine = np.float32(coarse), np.float32(fine)
    best_t, best = None, -1.0
    for t in coarse:
        score = brute_macro_f1(labels, probs > t)
        if score > best:
            best_t, best = t, score
    thresholds = np.full(labels.shape[1], best_t, np.float32)
    for _ in range(max_passes):
        changed = False
        for c in range(labels.shape[1]):
            current = brute_macro_f1(labels, probs > thresholds)
            for t in fine:
                trial = thresholds.copy()
                trial[c] = t
                score = brute_macro_f1(labels, probs > trial)
                if score > current:
                    thresholds, current, changed = trial, score, True
        if not changed:
            break
    return thresholds, brute_macro_f1(labels, probs > thresholds)


def random_problem(seed, n=300, round_to=None):
    """Informative probabilities: positives score higher, by a class-dependent margin."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, C)) < rng.random(C) ** 2
    labels[:, 5] = False  # a class with no positives
    logits = rng.normal(size=(n, C)) + labels * rng.uniform(0.5, 3, C) - rng.uniform(0, 2, C)
    probs = (1 / (1 + np.exp(-logits))).astype(np.float32)
    if round_to:  # many probabilities exactly on grid values: tests the strict `>`
        probs = np.round(probs / round_to) * np.float32(round_to)
    return probs.astype(np.float32), labels


@pytest.mark.parametrize("seed,round_to", [(0, None), (1, None), (2, 0.01)])
def test_greedy_matches_brute_force(seed, round_to):
    probs, labels = random_problem(seed, round_to=round_to)
    expected, expected_score = brute_greedy(probs, labels, postprocess.COARSE_GRID, postprocess.FINE_GRID)
    thresholds, score = postprocess.search_thresholds(probs, labels)
    assert thresholds.dtype == np.float32 and thresholds.shape == (C,)
    np.testing.assert_array_equal(thresholds, expected)
    assert score == pytest.approx(expected_score, rel=1e-6)


def test_single_is_the_best_coarse_threshold_and_ties_go_to_the_smallest():
    probs, labels = random_problem(3)
    thresholds, score = postprocess.search_thresholds(probs, labels, method="single")
    expected, expected_score = brute_greedy(probs, labels, postprocess.COARSE_GRID, [], max_passes=0)
    np.testing.assert_array_equal(thresholds, expected)
    assert score == pytest.approx(expected_score, rel=1e-6)
    # All probabilities below 0.2: every coarse value from 0.2 up predicts nothing (score 0).
    low = np.full((50, C), 0.15, np.float32)
    thresholds, _ = postprocess.search_thresholds(low, np.zeros((50, C), bool), coarse=[0.4, 0.2, 0.3],
                                                  method="single")
    np.testing.assert_array_equal(thresholds, np.float32(0.4))


def test_per_class_search_beats_a_single_threshold_on_biased_scores():
    """Rare classes scored systematically low (the paper's motivation): one threshold cannot
    serve both, per-class thresholds can."""
    rng = np.random.default_rng(0)
    rates = np.array(KAGGLE_TRAIN_COUNTS) / 31072
    labels = rng.random((4000, C)) < np.maximum(rates, 0.005)
    logits = rng.normal(size=labels.shape) + 3 * labels - 1.5
    rare = rates < 0.02
    logits[:, rare] -= 3  # rare classes: positives around sigmoid(-1.5), negatives far below
    probs = 1 / (1 + np.exp(-logits))
    single, single_score = postprocess.search_thresholds(probs, labels, method="single")
    greedy, greedy_score = postprocess.search_thresholds(probs, labels)
    assert greedy_score > single_score + 0.05
    assert greedy[rare].mean() < single[0] < greedy[~rare].mean() + 0.2


def test_label_rate_matches_the_target_rates_within_one_sample():
    probs, labels = random_problem(4, n=997)
    for rates in (None, np.random.default_rng(1).random(C) * 0.4):
        thresholds, _ = postprocess.search_thresholds(probs, labels, method="label_rate", rates=rates)
        target = labels.mean(0) if rates is None else rates
        predicted = postprocess.apply_thresholds(probs, thresholds).sum(0)
        assert np.all(np.abs(predicted - target * len(probs)) <= 1)


def test_force_one_fills_empty_rows_with_the_argmax_only():
    rng = np.random.default_rng(0)
    probs = rng.random((200, C))
    preds = postprocess.apply_thresholds(probs, 0.97)
    assert (~preds.any(1)).sum() > 50
    forced = postprocess.apply_thresholds(probs, 0.97, force_one=True)
    assert forced.any(1).all()
    added = forced & ~preds
    assert not (preds & ~forced).any()
    empty = ~preds.any(1)
    assert (added.sum(1) == empty).all()
    assert (added[empty].argmax(1) == probs[empty].argmax(1)).all()


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown threshold method 'best'"):
        postprocess.search_thresholds(np.zeros((2, C)), np.zeros((2, C)), method="best")


def test_cross_fitted_predictions_use_only_the_other_parts_thresholds():
    """Each half is decided by the brute-force greedy thresholds of the other half; the labels of
    a half never change its own predictions; here the honest score sits below the in-sample one."""
    probs, labels = random_problem(3, n=200)
    coarse, fine = postprocess.COARSE_GRID, postprocess.FINE_GRID
    halves = np.arange(len(probs)) % 2
    preds = postprocess.cross_fitted_predictions(probs, labels, halves)
    for half in (0, 1):
        inside = halves == half
        others, _ = brute_greedy(probs[~inside], labels[~inside], coarse, fine)
        np.testing.assert_array_equal(preds[inside], probs[inside] > others)

    shuffled = labels.copy()
    shuffled[halves == 0] = np.random.default_rng(0).permutation(labels[halves == 0])
    again = postprocess.cross_fitted_predictions(probs, shuffled, halves)
    np.testing.assert_array_equal(again[halves == 0], preds[halves == 0])

    _, in_sample = postprocess.search_thresholds(probs, labels)
    assert brute_macro_f1(labels, preds) < in_sample        # thresholds that saw the answers score higher
    with pytest.raises(ValueError, match="two parts"):
        postprocess.cross_fitted_predictions(probs, labels, np.zeros(len(probs), int))
