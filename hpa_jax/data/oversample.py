"""Minority oversampling of the training split: rare-class images repeated a few times, capped.

Zhang et al. 2021 "oversample the minority classes a few times ... We cannot oversample too much
because this can cause overfitting". The rule here, computed from the labels it is given (pass
the training rows only; the validation split must keep its true distribution):

    n_c       = number of training images with class c
    m_i       = n_c of the rarest class of image i (min over its classes)
    factor_i  = clip(round(target_count / m_i), 1, max_factor)

where `target_count` defaults to the median of the nonzero class counts (so classes at or above
the median are never repeated) and `round` is round-half-up (`floor(x + 0.5)`). An image with no
label is kept once. `rounding="stochastic"` instead repeats floor(r) times plus once more with
probability r - floor(r) (r the clipped ratio), drawn from `seed`: the expected count then
follows the ratio smoothly instead of in steps; the draw is the same for the same seed.

Multi-label images carry their other classes along: an image of a rare class and nucleoplasm
repeats nucleoplasm too, so majority classes grow a little as well (`class_counts_before_after`
shows by how much).

The indices returned are into the labels given, each image's copies adjacent, in file order;
the grain pipeline shuffles them every epoch.
"""

import numpy as np

from hpa_jax.errors import ConfigError

ROUNDING = ("nearest", "stochastic")


def class_counts(labels: np.ndarray) -> np.ndarray:
    """(N, C) indicator matrix -> (C,) int64 images per class."""
    return np.asarray(labels).astype(bool).sum(axis=0).astype(np.int64)


def rarest_class_counts(labels: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """(N,) count of each image's rarest class (by `counts`, default the labels' own); 0 for an
    image with no label."""
    labels = np.asarray(labels).astype(bool)
    counts = class_counts(labels) if counts is None else np.asarray(counts)
    big = np.iinfo(np.int64).max
    rarest = np.where(labels, counts[None, :], big).min(axis=1, initial=big)
    return np.where(rarest == big, 0, rarest)


def default_target_count(labels: np.ndarray) -> float:
    """The median of the nonzero class counts."""
    counts = class_counts(labels)
    return float(np.median(counts[counts > 0])) if (counts > 0).any() else 1.0


def oversample_factors(labels: np.ndarray, *, max_factor: int, target_count: float | None = None,
                       rounding: str = "nearest", seed: int = 0) -> np.ndarray:
    """(N,) int64 number of times each image is used per epoch; see the module doc."""
    labels = np.asarray(labels)
    if int(max_factor) != max_factor or max_factor < 1:
        raise ConfigError(f"oversample max_factor must be an integer >= 1, got {max_factor}")
    if rounding not in ROUNDING:
        raise ConfigError(f"unknown oversample rounding {rounding!r}: expected one of {', '.join(ROUNDING)}")
    target = default_target_count(labels) if not target_count else float(target_count)
    if target <= 0:
        raise ConfigError(f"oversample target_count must be > 0, got {target_count}")
    rarest = rarest_class_counts(labels)
    ratio = np.where(rarest > 0, target / np.maximum(rarest, 1), 1.0)
    ratio = np.clip(ratio, 1.0, float(max_factor))
    if rounding == "nearest":
        factors = np.floor(ratio + 0.5)
    else:
        base = np.floor(ratio)
        factors = base + (np.random.default_rng(seed).random(len(ratio)) < ratio - base)
    return np.clip(factors, 1, max_factor).astype(np.int64)


def oversample_indices(labels: np.ndarray, *, max_factor: int, target_count: float | None = None,
                       rounding: str = "nearest", seed: int = 0) -> np.ndarray:
    """Indices into `labels` (the training rows), image i repeated factor_i times; with
    max_factor=1 just arange(N)."""
    factors = oversample_factors(labels, max_factor=max_factor, target_count=target_count, rounding=rounding,
                                 seed=seed)
    return np.repeat(np.arange(len(factors)), factors)


def class_counts_before_after(labels: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((C,) images per class in `labels`, (C,) the same over `labels[indices]`)."""
    labels = np.asarray(labels)
    return class_counts(labels), class_counts(labels[np.asarray(indices)])


def summary(labels: np.ndarray, indices: np.ndarray, class_names=None) -> str:
    """A few lines for the log: the size change and the per-class counts before -> after."""
    before, after = class_counts_before_after(labels, indices)
    names = class_names or [str(c) for c in range(len(before))]
    parts = [f"{name} {b}->{a}" for name, b, a in zip(names, before, after) if b != a]
    return (f"oversampling: {len(labels)} -> {len(indices)} training images "
            f"({len(indices) / max(len(labels), 1):.2f}x); per class: " + (", ".join(parts) or "unchanged"))
