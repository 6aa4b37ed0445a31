"""Multi-label stratified folds (iterstrat), so that every fold sees every rare class."""

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold


def stratified_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """(N, C) indicator matrix -> fold index per row (0..num_folds-1), stratified on all C labels."""
    folds = np.full(len(labels), -1, np.int32)
    splitter = MultilabelStratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held_out] = fold
    return folds
