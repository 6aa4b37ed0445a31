"""`--embeddings` as HPA's tools read them: an AnnData `.h5ad` that anndata reads back with the
features and each image's probabilities, `probabilities.tsv` with the 28 class names as columns,
and the 2-D map as a PCA or (umap-learn installed, enough images) a seeded UMAP; without umap-learn
or anndata one note line each and the rest written."""

import pathlib
import re
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_jax.classes import CHANNELS, CLASS_NAMES
from hpa_jax.errors import ConfigError, DataError
from hpa_jax.explain import embeddings as embeddings_lib
from hpa_jax.folder import predict as folder_predict

NUM_IMAGES = 5


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """A folder of 5 random 40 px fields (the tiny run resizes them to its 32 px)."""
    folder = tmp_path_factory.mktemp("fields")
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        for color in CHANNELS:
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / f"field{i}_{color}.png")
    return folder


@pytest.fixture(scope="module")
def predicted(tiny_run, fields, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = folder_predict.predict_folder(tiny_run, fields, out, embeddings=True, progress=False)
    return out, result


def test_h5ad_reads_back_with_the_features_and_probabilities(predicted, tiny_run):
    anndata = pytest.importorskip("anndata")
    out, result = predicted
    adata = anndata.read_h5ad(out / "embeddings.h5ad")
    saved, probs = np.load(out / "embeddings.npz"), np.load(out / "probs.npz")
    assert adata.obs_names.tolist() == saved["ids"].tolist() == probs["ids"].tolist() == result["ids"]
    assert adata.X.dtype == np.float32 and adata.X.shape == (NUM_IMAGES, 64)
    np.testing.assert_array_equal(adata.X, saved["features"])
    np.testing.assert_array_equal(adata.obs[list(CLASS_NAMES)].to_numpy(), probs["probs"])
    assert adata.var_names.tolist() == [f"f{k}" for k in range(64)]

    # The predicted classes as predictions.csv has them, the top class as a categorical of all 28.
    frame = pd.read_csv(out / "predictions.csv", dtype={"Predicted": str}, keep_default_na=False)
    assert adata.obs["Predicted_names"].tolist() == frame["Predicted_names"].tolist()
    assert adata.obs["Predicted"].tolist() == frame["Predicted"].tolist()
    assert adata.obs["top_class"].cat.categories.tolist() == list(CLASS_NAMES)
    assert adata.obs["top_class"].tolist() == [CLASS_NAMES[c] for c in probs["probs"].argmax(axis=1)]

    # The PCA map's coordinates; no UMAP was asked for.
    np.testing.assert_allclose(adata.obsm["X_pca"], embeddings_lib.pca_2d(saved["features"])[0], rtol=1e-5, atol=1e-5)
    assert "X_umap" not in adata.obsm
    assert adata.uns["model"] == folder_predict.run_config(tiny_run).model.name
    assert adata.uns["checkpoint_step"] == result["step"] and adata.uns["embedding_map"] == "pca"
    np.testing.assert_array_equal(adata.uns["thresholds"], np.full(28, 0.5, np.float32))   # eval.threshold
    assert list(adata.uns["class_names"]) == list(CLASS_NAMES)

    # Written whole: no temporary file beside them.
    assert sorted(p.name for p in out.iterdir()) == ["embeddings.h5ad", "embeddings.npz", "embeddings_pca.png",
                                                     "predictions.csv", "probabilities.tsv", "probs.npz"]


def test_probabilities_tsv_has_the_28_class_names(predicted):
    out, _ = predicted
    frame = pd.read_csv(out / "probabilities.tsv", sep="\t")
    probs = np.load(out / "probs.npz")
    assert frame.columns.tolist() == ["Id", *CLASS_NAMES]
    assert frame["Id"].tolist() == probs["ids"].tolist()
    np.testing.assert_allclose(frame[list(CLASS_NAMES)].to_numpy(), probs["probs"], rtol=1e-5, atol=1e-9)


def test_umap_map_is_seeded_and_stored(tiny_run, fields, tmp_path):
    """The one test that fits UMAPs (umap-learn's first fit compiles numba)."""
    pytest.importorskip("umap")
    anndata = pytest.importorskip("anndata")
    folder_predict.predict_folder(tiny_run, fields, tmp_path, embeddings=True, embedding_map="umap", progress=False)
    assert (tmp_path / "embeddings_umap.png").stat().st_size > 0 and not (tmp_path / "embeddings_pca.png").exists()
    adata = anndata.read_h5ad(tmp_path / "embeddings.h5ad")
    assert adata.uns["embedding_map"] == "umap" and set(adata.obsm) == {"X_pca", "X_umap"}
    stored = adata.obsm["X_umap"]
    assert stored.shape == (NUM_IMAGES, 2) and np.isfinite(stored).all()
    again = embeddings_lib.embedding_map(np.load(tmp_path / "embeddings.npz")["features"], "umap", seed=0)
    assert again.method == "umap" and again.note is None
    np.testing.assert_array_equal(again.coords.astype(np.float32), stored)


def test_without_umap_learn_or_anndata_one_note_each(tiny_run, fields, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "umap", None)         # `import umap` raises ImportError
    monkeypatch.setitem(sys.modules, "anndata", None)
    folder_predict.predict_folder(tiny_run, fields, tmp_path, embeddings=True, embedding_map="umap", progress=False)
    notes = [line for line in capsys.readouterr().err.splitlines() if "note" in line]
    assert notes == ["hpa_jax.predict: note: umap-learn is not installed (pip install -r requirements-export.txt): "
                     "drawing the PCA instead",
                     "hpa_jax.predict: note: anndata is not installed (pip install -r requirements-export.txt): "
                     "embeddings.h5ad not written"]
    assert (tmp_path / "embeddings_pca.png").stat().st_size > 0 and not (tmp_path / "embeddings_umap.png").exists()
    assert not (tmp_path / "embeddings.h5ad").exists()
    assert {"embeddings.npz", "probabilities.tsv", "predictions.csv"} <= {p.name for p in tmp_path.iterdir()}


def test_too_few_images_for_umap_draw_the_pca():
    features = np.random.default_rng(0).normal(size=(3, 8))
    drawn = embeddings_lib.embedding_map(features, "umap")
    assert drawn.method == "pca" and drawn.note.startswith("a UMAP needs at least 4 images (3 here)")
    np.testing.assert_array_equal(drawn.coords, embeddings_lib.pca_2d(features)[0])


def test_unknown_map_is_one_line(tiny_run, fields, tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown --embedding_map 'tsne': expected pca or umap$"):
        folder_predict.predict_folder(tiny_run, fields, tmp_path / "out", embeddings=True, embedding_map="tsne")
    assert not (tmp_path / "out").exists()


def test_h5ad_write_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    anndata = pytest.importorskip("anndata")

    def disk_full(self, filename, **kwargs):
        pathlib.Path(filename).write_bytes(b"half an HDF5 file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", disk_full)
    path = tmp_path / "embeddings.h5ad"
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: writing failed: \[Errno 28\] No space left on device$"):
        embeddings_lib.save_anndata(path, ["a", "b"], np.ones((2, 3)), np.full((2, 28), 0.5), ["", ""], ["", ""])
    assert list(tmp_path.iterdir()) == []
