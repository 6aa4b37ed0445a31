"""load_dataset wires duplicates and folds; the train loop's oversampling sees only training rows."""

import shutil

import numpy as np
import pandas as pd
import pytest

from configs import default
from hpa_jax.data.datasets import load_dataset
from hpa_jax.training.loop import oversampled_rows


def kaggle_copy_with_duplicate(shared_data, tmp_path, num=6):
    src = shared_data / "hpa_kaggle_sample"
    frame = pd.read_csv(src / "train.csv").head(num)
    (tmp_path / "train").mkdir()
    for image_id in frame["Id"]:
        for color in ("red", "green", "blue", "yellow"):
            shutil.copy(src / "train" / f"{image_id}_{color}.png", tmp_path / "train")
    first = frame["Id"][0]
    for color in ("red", "green", "blue", "yellow"):       # an exact copy under a new Id
        shutil.copy(src / "train" / f"{first}_{color}.png", tmp_path / "train" / f"copy_{color}.png")
    frame = pd.concat([frame, pd.DataFrame({"Id": ["copy"], "Target": [frame["Target"][0]]})])
    frame.to_csv(tmp_path / "train.csv", index=False)
    return first


@pytest.mark.parametrize("policy", ["none", "drop", "same_fold"])
def test_duplicate_policies(shared_data, tmp_path, policy):
    first = kaggle_copy_with_duplicate(shared_data, tmp_path)
    config = default.get_config()
    config.data.dir = str(tmp_path)
    config.data.duplicates = policy
    config.data.duplicate_cache = str(tmp_path / "cache")
    config.data.num_folds = 3
    dataset = load_dataset(config)
    ids = list(dataset.train_ids)
    if policy == "drop":
        assert ids == [i for i in ids if i != "copy"] and len(ids) == 6 and first in ids
    else:
        assert len(ids) == 7
    if policy == "same_fold":
        assert dataset.folds[ids.index("copy")] == dataset.folds[ids.index(first)]


def test_oversampling_touches_only_training_rows():
    config = default.get_config()
    config.data.oversample_max_factor = 3
    rng = np.random.default_rng(0)
    labels = np.zeros((200, 28), np.uint8)
    labels[:, 0] = 1
    labels[rng.choice(200, 20, replace=False), 27] = 1       # a rare class
    train_idx = np.arange(0, 200, 2)
    rows = oversampled_rows(config, labels, train_idx)
    assert set(rows) <= set(train_idx) and len(rows) > len(train_idx)
    assert labels[rows, 27].sum() > labels[train_idx, 27].sum()
    config.data.oversample_max_factor = 1
    np.testing.assert_array_equal(oversampled_rows(config, labels, train_idx), train_idx)


def test_fold_seed_fixes_the_split_while_seed_varies(shared_data):
    """`data.fold_seed` set: every `seed` gets iterstrat's folds for that fold seed; unset, the
    folds follow `seed` (as before the option existed)."""
    from hpa_jax.data.folds import stratified_folds

    config = default.get_config()
    config.data.dir = str(shared_data / "hpa_kaggle_sample")
    folds = {}
    for fold_seed, seed in [(None, 1), (None, 2), (7, 1), (7, 2)]:
        config.seed, config.data.fold_seed = seed, fold_seed
        dataset = load_dataset(config)
        folds[fold_seed, seed] = dataset.folds
        expected = stratified_folds(dataset.train_labels, config.data.num_folds, seed if fold_seed is None else 7)
        np.testing.assert_array_equal(dataset.folds, expected)
    assert not np.array_equal(folds[None, 1], folds[None, 2])
    np.testing.assert_array_equal(folds[7, 1], folds[7, 2])
