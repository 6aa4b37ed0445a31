"""macro-F1 against a brute-force per-class count and against scikit-learn."""

import numpy as np
import pytest

from hpa_jax import postprocess


def brute_force_f1(labels, preds):
    scores = []
    for c in range(labels.shape[1]):
        tp = fp = fn = 0
        for y, p in zip(labels[:, c], preds[:, c]):
            tp += bool(y and p)
            fp += bool(p and not y)
            fn += bool(y and not p)
        scores.append(0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    rates = rng.random(28) ** 3
    labels = rng.random((n, 28)) < rates
    preds = rng.random((n, 28)) < rng.random(28)
    labels[:, :3] = False                    # classes with no true positives at all
    preds[:, 1] = False                      # ... and one with no predictions either
    expected = brute_force_f1(labels, preds)
    np.testing.assert_allclose(postprocess.per_class_f1(labels, preds), expected, rtol=1e-6, atol=1e-7)
    assert float(postprocess.macro_f1(labels, preds)) == pytest.approx(np.mean(expected), rel=1e-6)


def test_macro_f1_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (installed with iterstrat) is absent")
    rng = np.random.default_rng(7)
    labels = rng.random((500, 28)) < rng.random(28) ** 2
    preds = rng.random((500, 28)) < 0.3
    labels[:, 5] = False
    preds[:, 5] = False
    expected = metrics.f1_score(labels, preds, average="macro", zero_division=0)
    assert float(postprocess.macro_f1(labels, preds)) == pytest.approx(expected, rel=1e-6)


def test_label_prior_baseline_is_near_the_prior():
    """Guessing at the class rate scores F1 ~= the rate for each class (independent guesses)."""
    rng = np.random.default_rng(0)
    rates = np.linspace(0.05, 0.6, 28)
    train = rng.random((20000, 28)) < rates
    val = rng.random((20000, 28)) < rates
    assert postprocess.label_prior_baseline(train, val) == pytest.approx(rates.mean(), abs=0.01)


def test_submission_is_written_whole(tmp_path):
    preds = np.zeros((3, 28), bool)
    preds[0, [0, 25]] = True
    preds[2, 27] = True
    path = postprocess.write_submission(tmp_path / "submission.csv", ["a", "b", "c"], preds)
    assert path.read_text() == "Id,Predicted\na,0 25\nb,\nc,27\n"
    assert not list(tmp_path.glob("*.tmp"))
