"""Image embeddings (the encoder's pooled features, `explain.py`) on disk and as a 2-D map.

`embeddings.npz` holds `ids` (N,) and `features` (N, K) float32, to cluster proteins with any
tool. The map is a PCA (the two leading principal components of the centred features, by SVD:
deterministic, no extra dependency; UMAP is a `pip install umap-learn` away for whoever wants it)
coloured by each image's most probable class.
"""

import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from hpa_jax.classes import CLASS_NAMES


def save_embeddings(path, ids, features) -> pathlib.Path:
    """`ids` (str) and `features` (N, K) float32, written whole (temporary name, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids, str), features=np.asarray(features, np.float32))
    tmp.replace(path)
    return path


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) coordinates on the two leading principal components and their explained-variance
    fractions (2,); components beyond the data's rank are zeros. Signs are fixed (largest
    loading positive) so the same features always give the same picture."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:2]
    vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    coords = np.zeros((len(x), 2))
    coords[:, :len(vt)] = x @ vt.T
    total = float((s ** 2).sum())
    explained = np.zeros(2)
    explained[:len(vt)] = (s[:2] ** 2) / total if total > 0 else 0.0
    return coords, explained


def plot_pca(path, features: np.ndarray, probs: np.ndarray) -> pathlib.Path:
    """The PCA map of the embeddings, each image coloured by its most probable class."""
    coords, explained = pca_2d(features)
    top = np.asarray(probs).argmax(axis=1)
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab20"].colors + matplotlib.colormaps["tab20b"].colors
    for c in np.unique(top):
        inside = top == c
        ax.scatter(coords[inside, 0], coords[inside, 1], s=18, color=colours[c % len(colours)],
                   label=f"{c} {CLASS_NAMES[c]} ({inside.sum()})")
    ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC 2 ({explained[1]:.0%})")
    ax.set_title(f"Embeddings of {len(coords)} images (encoder features, PCA), by most probable class", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return pathlib.Path(path)
