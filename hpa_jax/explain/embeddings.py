"""Image embeddings (the encoder's pooled features, `explain.py`) on disk and as a 2-D map.

`embeddings.npz` holds `ids` (N,) and `features` (N, K) float32, to cluster proteins with any
tool; `embeddings.h5ad` holds the same features as AnnData (as HPA's SubCellPortable writes them)
with each image's probabilities and predicted classes as observations. The map is a PCA (the two
leading principal components of the centred features, by SVD: deterministic, no extra
dependency) or a UMAP (umap-learn, seeded), coloured by each image's most probable class.

umap-learn and anndata are optional (`requirements-export.txt`) and imported only when used: a
missing one gives a one-line note from `embedding_map` / `save_anndata` and the rest goes on.
"""

import importlib
import pathlib
import warnings
from typing import NamedTuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.errors import file_errors

MAPS = ("pca", "umap")
UMAP_MIN_IMAGES = 4      # below this UMAP's spectral layout fails (k >= N); PCA draws those few
UMAP_NEIGHBOURS = 15     # umap-learn's default, clipped to N - 1 for small folders


class Map2D(NamedTuple):
    """2-D coordinates of the embeddings, how they were made (`pca` or `umap`), the axes' labels,
    and a note when a UMAP was asked for and a PCA given instead (None otherwise)."""
    coords: np.ndarray
    method: str
    axes: tuple[str, str]
    note: str | None = None


def optional_module(name: str):
    """The module, or None when it is not installed (an optional dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


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


def umap_2d(umap, features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) UMAP coordinates (`umap`: the imported umap-learn module), N >= UMAP_MIN_IMAGES.
    Seeded and single-threaded, so the same features give the same map; umap-learn's warnings
    about small data (neighbours truncated, spectral layout replaced) are its own business."""
    x = np.asarray(features, np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(UMAP_NEIGHBOURS, len(x) - 1)), random_state=seed,
                        n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(reducer.fit_transform(x), np.float64)


def embedding_map(features: np.ndarray, method: str = "pca", seed: int = 0) -> Map2D:
    """The 2-D map `method` asks for: a UMAP where umap-learn is installed and there are enough
    images, else the PCA with a note saying why."""
    if method not in MAPS:
        raise ValueError(f"unknown embedding map {method!r}: expected one of {', '.join(MAPS)}")
    note = None
    if method == "umap":
        if len(features) < UMAP_MIN_IMAGES:
            note = f"a UMAP needs at least {UMAP_MIN_IMAGES} images ({len(features)} here): drawing the PCA instead"
        elif (umap := optional_module("umap")) is None:
            note = "umap-learn is not installed (pip install -r requirements-export.txt): drawing the PCA instead"
        else:
            return Map2D(umap_2d(umap, features, seed), "umap", ("UMAP 1", "UMAP 2"))
    coords, explained = pca_2d(features)
    return Map2D(coords, "pca", (f"PC 1 ({explained[0]:.0%} of the variance)", f"PC 2 ({explained[1]:.0%})"), note)


def plot_map(path, embedding: Map2D, probs: np.ndarray) -> pathlib.Path:
    """The 2-D map of the embeddings (PCA or UMAP), each image coloured by its most probable class."""
    coords = embedding.coords
    top = np.asarray(probs).argmax(axis=1)
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    colours = matplotlib.colormaps["tab20"].colors + matplotlib.colormaps["tab20b"].colors
    for c in np.unique(top):
        inside = top == c
        ax.scatter(coords[inside, 0], coords[inside, 1], s=18, color=colours[c % len(colours)],
                   label=f"{c} {CLASS_NAMES[c]} ({inside.sum()})")
    ax.set_xlabel(embedding.axes[0])
    ax.set_ylabel(embedding.axes[1])
    ax.set_title(f"Embeddings of {len(coords)} images (encoder features, {embedding.method.upper()}), "
                 f"by most probable class", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return pathlib.Path(path)


def save_anndata(path, ids, features, probs, predicted_names, predicted, *, obsm: dict | None = None,
                 uns: dict | None = None) -> str | None:
    """`embeddings.h5ad`: X the features (N, K) float32, obs indexed by Id with `Predicted_names`,
    `Predicted` (as predictions.csv), `top_class` (categorical over the 28 class names) and one
    probability column per class name; var `f0`..; `obsm` (e.g. X_pca, X_umap) and `uns` as given.
    Written whole (temporary name, then rename). Returns a note instead when anndata is missing."""
    anndata = optional_module("anndata")
    if anndata is None:
        return (f"anndata is not installed (pip install -r requirements-export.txt): {pathlib.Path(path).name} "
                f"not written")
    probs = np.asarray(probs, np.float32)
    obs = pd.DataFrame({"Predicted_names": list(predicted_names), "Predicted": list(predicted),
                        "top_class": pd.Categorical.from_codes(probs.argmax(axis=1), categories=list(CLASS_NAMES))},
                       index=pd.Index([str(i) for i in ids], name="Id"))
    obs = pd.concat([obs, pd.DataFrame(probs, columns=list(CLASS_NAMES), index=obs.index)], axis=1)
    features = np.asarray(features, np.float32)
    var = pd.DataFrame(index=pd.Index([f"f{k}" for k in range(features.shape[1])], name="feature"))
    adata = anndata.AnnData(X=features, obs=obs, var=var,
                            obsm={k: np.asarray(v, np.float32) for k, v in (obsm or {}).items()}, uns=dict(uns or {}))
    path = pathlib.Path(path)
    tmp = path.with_name(path.stem + ".tmp.h5ad")
    try:
        with file_errors(path, "writing", kinds=(OSError,)):
            adata.write_h5ad(tmp)
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return None
