"""Minority oversampling: the per-image factor rule, the cap, determinism, training rows only."""

import math

import numpy as np
import pytest

from hpa_jax.data import folds as folds_lib
from hpa_jax.data import oversample
from hpa_jax.data.kaggle import multi_hot, read_labels_csv
from hpa_jax.errors import ConfigError


def _skewed_labels(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    rates = np.array([0.4, 0.2, 0.1, 0.05, 0.02, 0.01, 0.004, 0.0])  # the last class is absent
    labels = (rng.random((n, len(rates))) < rates).astype(np.uint8)
    labels[:5] = 0  # a few images with no label
    return labels


def _brute_factor(row, counts, target, max_factor):
    """The documented rule for one image, with Python's own arithmetic."""
    present = [int(counts[c]) for c in range(len(row)) if row[c]]
    if not present:
        return 1
    return min(max(math.floor(target / min(present) + 0.5), 1), max_factor)


@pytest.mark.parametrize("max_factor,target_count", [(4, None), (3, 250), (8, 900), (1, None)])
def test_factors_match_the_rule_per_image(max_factor, target_count):
    labels = _skewed_labels()
    counts = labels.sum(axis=0)
    target = target_count or float(np.median(counts[counts > 0]))
    expected = [_brute_factor(row, counts, target, max_factor) for row in labels]
    factors = oversample.oversample_factors(labels, max_factor=max_factor, target_count=target_count)
    np.testing.assert_array_equal(factors, expected)
    assert factors.min() >= 1 and factors.max() <= max_factor             # the cap
    indices = oversample.oversample_indices(labels, max_factor=max_factor, target_count=target_count)
    np.testing.assert_array_equal(np.bincount(indices, minlength=len(labels)), factors)
    assert (np.diff(indices) >= 0).all()                                   # copies adjacent, file order
    if max_factor == 1:
        np.testing.assert_array_equal(indices, np.arange(len(labels)))


def test_rare_classes_grow_and_common_ones_barely():
    labels = _skewed_labels()
    indices = oversample.oversample_indices(labels, max_factor=4)
    before, after = oversample.class_counts_before_after(labels, indices)
    np.testing.assert_array_equal(before, labels.sum(axis=0))
    target = np.median(before[before > 0])
    rare = (before > 0) & (before * 1.5 <= target)                          # ratio rounds to >= 2
    assert rare.any() and (after[rare] >= 2 * before[rare]).all()
    assert (after <= 4 * before).all()                                     # no class beyond the cap
    assert after[-1] == before[-1] == 0
    assert after[0] < 1.2 * before[0]                                      # the majority class: carried along only
    assert "training images" in oversample.summary(labels, indices)


def test_training_split_only_on_the_kaggle_labels(shared_data):
    """Oversampling the training rows of fold 0 leaves the validation rows alone: the factors
    come from the training labels only (changing validation labels changes nothing) and every
    index maps back to a training row."""
    frame = read_labels_csv(shared_data / "hpa_kaggle_train_labels.csv")
    labels = multi_hot(frame["labels"])
    folds = folds_lib.stratified_folds(labels, 5, 0)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    rows = train_idx[oversample.oversample_indices(labels[train_idx], max_factor=4)]
    assert np.isin(rows, train_idx).all() and not np.isin(rows, val_idx).any()
    assert np.array_equal(np.unique(rows), train_idx)                      # every training image kept
    scrambled = labels.copy()
    scrambled[val_idx] = np.random.default_rng(0).integers(0, 2, scrambled[val_idx].shape)
    np.testing.assert_array_equal(train_idx[oversample.oversample_indices(scrambled[train_idx], max_factor=4)], rows)
    after = oversample.class_counts(labels[rows])
    train_counts = labels[train_idx].sum(axis=0)
    rarest = np.argmin(train_counts)                                        # rods & rings (class 27)
    assert rarest == 27 and after[rarest] == 4 * train_counts[rarest]
    assert 1.05 < len(rows) / len(train_idx) < 1.25


def test_stochastic_rounding_is_seeded_and_unbiased():
    labels = _skewed_labels(n=20000, seed=1)
    kwargs = dict(max_factor=5, target_count=300, rounding="stochastic")
    a = oversample.oversample_factors(labels, seed=3, **kwargs)
    np.testing.assert_array_equal(a, oversample.oversample_factors(labels, seed=3, **kwargs))
    assert not np.array_equal(a, oversample.oversample_factors(labels, seed=4, **kwargs))
    rarest = oversample.rarest_class_counts(labels)
    ratio = np.where(rarest > 0, np.clip(300 / np.maximum(rarest, 1), 1, 5), 1)
    assert (a >= np.floor(ratio)).all() and (a <= np.ceil(ratio)).all() and a.max() <= 5
    assert abs(a.sum() - ratio.sum()) < 0.02 * ratio.sum()


def test_rarest_class_counts_and_errors():
    labels = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]], np.uint8)
    np.testing.assert_array_equal(oversample.rarest_class_counts(labels), [2, 3, 0, 1])  # counts 3, 1, 2
    with pytest.raises(ConfigError, match="max_factor"):
        oversample.oversample_indices(labels, max_factor=0)
    with pytest.raises(ConfigError, match="max_factor"):
        oversample.oversample_indices(labels, max_factor=2.5)
    with pytest.raises(ConfigError, match="rounding"):
        oversample.oversample_indices(labels, max_factor=2, rounding="up")
    with pytest.raises(ConfigError, match="target_count"):
        oversample.oversample_indices(labels, max_factor=2, target_count=-3)
