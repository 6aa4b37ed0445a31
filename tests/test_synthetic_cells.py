"""Synthetic fields whose cells differ (`render_cells`, `generate(varied_cells=True)`): their truth
(masks, per-cell classes) agrees with the image, and the plain fields are what they were."""

import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_jax.classes import CHANNELS
from hpa_jax.config import defaults
from hpa_jax.data import masks, synthetic
from hpa_jax.data.datasets import resolve_root

GREEN = CHANNELS.index("green")


def _read_csv(path: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _varied(seed: int, size: int = 128, labels=None) -> synthetic.CellField:
    rng = np.random.default_rng(seed)
    return synthetic.render_cells(synthetic.sample_labels(rng) if labels is None else labels, size, rng)


# ----------------------------------------------------------------------------- plain fields unchanged

def test_plain_fields_are_those_generated_before_varied_cells_existed(tmp_path):
    """Labels exactly, and each channel's pixel sum, as the generator wrote them before this change
    (sums, not bytes: XLA-free, but float32 rounding may differ by a grey level on another CPU)."""
    root = synthetic.generate(tmp_path, num_train=3, num_test=1, image_size=64, seed=3)
    assert (root / "train.csv").read_text() == ("Id,Target\n0ecaf10c-b01f-c800-b9d9-9c39ec949581,3 11\n"
                                               "575b41a7-5802-677f-7b86-27b02cb5edef,3\n"
                                               "97c3d494-779b-b294-f119-740c40795c9e,7 12\n")
    assert (root / "test_labels.csv").read_text() == "Id,Target\n9817fcfd-b04e-9148-b8bc-344e81c16062,7\n"
    sums = {("train", "0ecaf10c-b01f-c800-b9d9-9c39ec949581"): [105519, 37450, 69199, 85767],
            ("train", "575b41a7-5802-677f-7b86-27b02cb5edef"): [106136, 14028, 91586, 80250],
            ("train", "97c3d494-779b-b294-f119-740c40795c9e"): [65803, 28595, 38958, 62251],
            ("test", "9817fcfd-b04e-9148-b8bc-344e81c16062"): [124246, 27295, 59958, 89742]}
    for (split, image_id), want in sums.items():
        got = [int(np.asarray(Image.open(root / split / f"{image_id}_{c}.png"), np.int64).sum()) for c in CHANNELS]
        np.testing.assert_allclose(got, want, atol=8)
    assert not (root / synthetic.CELLS_FOLDER).exists() and not (root / synthetic.CELLS_CSV).exists()


def test_a_varied_field_whose_cells_carry_every_class_is_the_plain_field():
    """One code path: with every cell carrying every class, the varied renderer gives render_field's
    pixels bit for bit; and a varied field's reference channels are always the plain field's."""
    every = lambda field, labels: {c: np.ones(field.n, bool) for c in labels}   # noqa: E731
    for seed, labels in ((0, [0, 25]), (1, [17, 22]), (2, [16, 23])):
        plain = synthetic.render_field(labels, 96, np.random.default_rng(seed))
        np.testing.assert_array_equal(synthetic._render(labels, 96, np.random.default_rng(seed), every)[0], plain)
        varied = synthetic.render_cells(labels, 96, np.random.default_rng(seed)).image
        np.testing.assert_array_equal(varied[..., [0, 2, 3]], plain[..., [0, 2, 3]])


# ----------------------------------------------------------------------------- the truth of a varied field

def test_truth_is_consistent():
    differ = 0
    for seed in range(12):
        field = _varied(seed)
        k = field.cells.max()
        assert field.cells.dtype == field.nuclei.dtype == np.int32
        assert set(np.unique(field.cells)) == set(range(k + 1))                  # 1..K, no gaps
        assert len(field.cell_labels) == k
        inside = field.nuclei > 0
        assert (field.cells[inside] == field.nuclei[inside]).all()               # nucleus k lies in cell k
        assert field.labels == sorted(set().union(*field.cell_labels)) and field.labels
        assert all(list(c) == sorted(set(c)) for c in field.cell_labels)
        differ += len(set(field.cell_labels)) > 1
    assert differ >= 6, "most varied fields hold cells with different classes"


def test_a_class_shows_in_the_cells_that_carry_it():
    """Cytosol (25) and nucleoplasm (0): the green signal of carrier cells is several times that of
    the other cells of the same field (which show only the faint nonspecific staining)."""
    ratios = []
    for seed in range(8):
        for label in (0, 25):
            field = _varied(seed, labels=[label])
            carry = np.array([label in c for c in field.cell_labels])
            if carry.all() or not carry.any():
                continue
            green = field.image[..., GREEN].astype(float)
            mean = np.array([green[field.cells == k].mean() for k in range(1, len(carry) + 1)])
            ratios.append(mean[carry].mean() / mean[~carry].mean())
    assert len(ratios) >= 6 and min(ratios) > 2


def _touches_another(cells: np.ndarray, k: int) -> bool:
    """Cell k has a pixel of another cell beside one of its own."""
    own = np.pad(cells == k, 1)
    beside = own[:-2, 1:-1] | own[2:, 1:-1] | own[1:-1, :-2] | own[1:-1, 2:]
    return bool((beside & (cells > 0) & (cells != k)).any())


def test_special_classes_sit_where_they_can():
    """Mitotic spindle (17): only mitotic cells, whose chromatin is condensed; cell junctions (22)
    and cytokinetic bridges (16): only cells that touch another."""
    for seed in range(6):
        field = _varied(seed, labels=[16, 17, 22])
        for k, classes in enumerate(field.cell_labels, 1):
            if 16 in classes or 22 in classes:
                assert _touches_another(field.cells, k)
        mitotic = [k for k, c in enumerate(field.cell_labels, 1) if 17 in c]
        assert mitotic, "a field labelled 17 has at least one mitotic cell"


# ----------------------------------------------------------------------------- files

@pytest.fixture(scope="module")
def varied_dataset(tmp_path_factory) -> pathlib.Path:
    return synthetic.generate(tmp_path_factory.mktemp("varied"), num_train=6, num_test=2, image_size=64, seed=5,
                              varied_cells=True)


def test_generate_writes_the_truth(varied_dataset):
    root = varied_dataset
    train, test = _read_csv(root / "train.csv"), _read_csv(root / "test_labels.csv")
    cells = _read_csv(root / synthetic.CELLS_CSV)
    assert list(cells.columns) == ["Id", "cell", "Target"]
    for split, frame in (("train", train), ("test", test)):
        for image_id, target in zip(frame["Id"], frame["Target"]):
            mine = cells[cells["Id"] == image_id]
            union = set().union(*({int(c) for c in t.split()} for t in mine["Target"]))
            assert union == {int(c) for c in target.split()}                         # the field's labels
            found = masks.read_masks(root / synthetic.CELLS_FOLDER, image_id, (64, 64))
            assert list(mine["cell"].astype(int)) == list(range(1, found.cells.max() + 1))
            assert found.nuclei is not None and set(np.unique(found.nuclei)) <= set(np.unique(found.cells))
            assert (root / split / f"{image_id}_green.png").is_file()


def test_generate_varied_is_deterministic(varied_dataset, tmp_path):
    again = synthetic.generate(tmp_path, num_train=6, num_test=2, image_size=64, seed=5, varied_cells=True)
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files(again) == files(varied_dataset)


def test_config_field_and_cache_folder(tmp_path):
    """Off by default (tests/test_config.py checks its refusals); on, the cache holds its own folder."""
    config = defaults.get_config()
    assert config.data.synthetic.varied_cells is False
    config.data.source = "synthetic"
    config.data.synthetic.update(num_train=2, num_test=1, image_size=32, cache_dir=str(tmp_path), varied_cells=True)
    root = resolve_root(config.data)
    assert root.name == "synthetic-v2-cells-n2-t1-px32-seed0" and (root / synthetic.CELLS_CSV).is_file()
