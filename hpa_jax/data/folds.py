"""Multi-label stratified folds (iterstrat), so that every fold sees every rare class.

With `groups` (e.g. near-duplicate groups from `hpa_jax.data.duplicates`), whole groups are
assigned to folds, so that no image is validated against a near-copy of itself seen in training:
iterstrat runs on one row per group, numbered in order of first appearance, whose labels are the
*union* (logical or) of its images' labels, and every image inherits its group's fold.

Why the union and not the per-class sum: iterstrat (Sechidis et al.'s iterative stratification)
needs a 0/1 indicator matrix (it indexes with each row as a boolean mask, and a count row would
be read as class indices) and it balances rows, not images. A group therefore weighs as one
sample however many images it has; with groups of 2-3 near-duplicates among thousands of
images the per-class image proportions of the folds stay within a few percent of the ungrouped
split (see tests/test_folds.py for the tolerance measured on the 31,072 Kaggle labels).

When every group is a single image (or `groups` is None) the rows and their order are the same,
so the folds are exactly iterstrat's on the images.
"""

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold


def _iterstrat_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    folds = np.full(len(labels), -1, np.int32)
    splitter = MultilabelStratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held_out] = fold
    return folds


def group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) labels and (N,) group keys -> ((G, C) union of each group's labels, (N,) row of
    each image in it). Groups are ordered by their first image, whatever their keys."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if groups.shape != (len(labels),):
        raise ValueError(f"groups must have one entry per row: shape {groups.shape} for {len(labels)} rows")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # group key -> position of its first image among the groups
    rows = rank[inverse.ravel()]
    union = np.zeros((len(first), labels.shape[1]), labels.dtype)
    np.maximum.at(union, rows, labels)
    return union, rows


def stratified_folds(labels: np.ndarray, num_folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(N, C) indicator matrix -> fold index per row (0..num_folds-1), stratified on all C labels.

    `groups` (N,) (any integer or string keys): images with the same key get the same fold; see
    the module doc. None: exactly `MultilabelStratifiedKFold(num_folds, shuffle=True,
    random_state=seed)` on the rows.
    """
    if groups is None:
        return _iterstrat_folds(labels, num_folds, seed)
    union, rows = group_labels(labels, groups)
    if len(union) < num_folds:
        raise ValueError(f"{len(union)} groups cannot fill {num_folds} folds")
    return _iterstrat_folds(union, num_folds, seed)[rows]
