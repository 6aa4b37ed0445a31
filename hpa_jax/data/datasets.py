"""Resolves a config to a dataset on disk: the Kaggle layout given by `data.dir` (its training
images from one folder, or from several sources, `data.sources`: `combined`), or the embedded
synthetic dataset generated into a cache folder."""

import dataclasses
import os
import pathlib

import numpy as np
import pandas as pd

from hpa_jax.data import combined, duplicates, folds as folds_lib, pipeline
from hpa_jax.errors import ConfigError, DataError

SOURCES = ("kaggle", "synthetic")   # data.source
NO_DATA_DIR = ("data.dir is not set: pass --config.data.dir=/path/to/hpa (a folder with train.csv and train/), or run "
               "--config=configs/quickstart.py to use the embedded synthetic dataset")


@dataclasses.dataclass(frozen=True)
class HPADataset:
    """Ids, labels and source of the training images, their fold, and the test Ids, all in file
    order (sources in the order listed)."""

    root: pathlib.Path
    train_ids: np.ndarray        # (N,) str
    train_labels: np.ndarray     # (N, 28) uint8
    folds: np.ndarray            # (N,) int32
    test_ids: np.ndarray         # (M,) str, in sample_submission.csv order
    sources: tuple[combined.Source, ...]   # where the training images are (`data.sources`)
    train_source_index: np.ndarray         # (N,) index into `sources`

    @property
    def train_source_names(self) -> np.ndarray:
        """(N,) the name of each training image's source (`folds.csv`'s `source` column)."""
        return np.asarray([s.name for s in self.sources])[self.train_source_index]

    @property
    def test_dir(self) -> pathlib.Path:
        return self.root / "test"

    def train_source(self, rows, data_config) -> pipeline.ImageSource | pipeline.PackedSource:
        """The training images at `rows` (indices into train_ids) as a grain source: read from the
        packed store `data.packed`/train when `data.packed` is set, else decoded from each row's source."""
        rows = np.asarray(rows, np.int64)
        if data_config.packed:
            return pipeline.PackedSource.from_config(data_config, pathlib.Path(data_config.packed) / "train",
                                                     self.train_ids[rows], self.train_labels[rows])

        def folder_source(k, positions):
            source = self.sources[k]
            return pipeline.ImageSource.from_config(data_config, source.images, self.train_ids[rows[positions]],
                                                    self.train_labels[rows[positions]], fmt=source.fmt)

        if len(self.sources) == 1:
            return folder_source(0, np.arange(len(rows)))
        return pipeline.MixedSource.from_rows(folder_source, self.train_source_index[rows])

    def test_source(self, data_config) -> pipeline.ImageSource | pipeline.PackedSource:
        """The test images, unlabelled, in sample_submission.csv order (from `data.packed`/test when set)."""
        labels = np.zeros((len(self.test_ids), self.train_labels.shape[1]), np.uint8)
        if data_config.packed:
            return pipeline.PackedSource.from_config(data_config, pathlib.Path(data_config.packed) / "test",
                                                     self.test_ids, labels)
        return pipeline.ImageSource.from_config(data_config, self.test_dir, self.test_ids, labels)

    def split(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of (training, validation) for the held-out `fold`."""
        return np.flatnonzero(self.folds != fold), np.flatnonzero(self.folds == fold)


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("HPA_JAX_CACHE", pathlib.Path.home() / ".cache" / "hpa_jax"))


def resolve_root(data_config) -> pathlib.Path:
    """The dataset folder; generates the synthetic one on first use."""
    if data_config.source == "synthetic":
        from hpa_jax.data import synthetic  # the generator is only needed for this source

        s = data_config.synthetic
        return synthetic.ensure_synthetic(s.cache_dir or default_cache_dir(), num_train=s.num_train,
                                          num_test=s.num_test, image_size=s.image_size, seed=s.seed,
                                          varied_cells=s.varied_cells)
    if data_config.source != "kaggle":
        raise ConfigError(f"unknown data.source {data_config.source!r}: expected one of {', '.join(SOURCES)}")
    if not data_config.dir:
        raise DataError(NO_DATA_DIR)
    root = pathlib.Path(data_config.dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data.dir is not a folder")
    return root


def union_hashes(union: combined.Union, data_config) -> np.ndarray:
    """(N,) green-channel pHashes of the union's rows, each source hashed from its own folder and
    format and cached per folder (`duplicates.cached_hashes`)."""
    cache_dir = data_config.duplicate_cache or default_cache_dir()
    parts = []
    for k, source in enumerate(union.sources):
        cache = duplicates.cache_file(cache_dir, source.images, fmt=source.fmt)
        parts.append(duplicates.cached_hashes(source.images, union.ids[union.rows_of(k)], cache, fmt=source.fmt,
                                              num_threads=pipeline.decoding_threads(data_config)))
    return np.concatenate(parts)


def fold_seed(config) -> int:
    """What draws the folds (and the halves of a validation fold): `data.fold_seed`, or `seed` when
    unset. Fixing it while `seed` varies repeats a run with another initialisation and data order
    on the very same split (the ablation's seeds)."""
    chosen = config.data.fold_seed
    return int(config.seed if chosen is None else chosen)


def load_dataset(config) -> HPADataset:
    """Reads the label files of every training source, handles near-duplicates across all of them
    (`data.duplicates`: drop them, keeping the first-listed source's copy, or keep each group in
    one fold) and assigns multi-label stratified folds over the union (seeded by `fold_seed`)."""
    root = resolve_root(config.data)
    union = combined.read_union(combined.sources_from_config(config.data, root), config.num_classes)
    ids, labels, source_index = union.ids, union.labels, union.source
    groups = None
    if config.data.duplicates != "none":
        rows, groups, summary = duplicates.apply_policy(
            duplicates.group_duplicates(union_hashes(union, config.data), config.data.duplicate_distance,
                                        progress=True),
            config.data.duplicates, config.data.duplicate_distance)
        print(summary.with_sources(union.source_names, rows) if len(union.sources) > 1 else summary)
        ids, labels, source_index = ids[rows], labels[rows], source_index[rows]
    folds = folds_lib.stratified_folds(labels, config.data.num_folds, fold_seed(config), groups=groups)
    submission = root / "sample_submission.csv"
    test_ids = (pd.read_csv(submission, dtype=str, keep_default_na=False)["Id"].to_numpy()
                if submission.is_file() else np.array([], dtype=str))
    return HPADataset(root=root, train_ids=ids, train_labels=labels, folds=folds, test_ids=test_ids,
                      sources=union.sources, train_source_index=source_index)
