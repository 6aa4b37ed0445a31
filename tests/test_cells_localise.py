"""Per-cell labels: the CAM route and the crop route against brute-force loops over pixels, and
`python -m hpa_jax.predict --cells` end to end on the tiny run (three outputs whose cells agree,
a bad masks file named in one line)."""

import pathlib

import numpy as np
import pytest

from hpa_jax.cells import localise
from hpa_jax.explain.maps import upsample


def _labels() -> np.ndarray:
    """A 12 x 16 field with cells 1, 2, 5 (a gap) and 7 touching the edges."""
    labels = np.zeros((12, 16), np.int32)
    labels[1:5, 1:6] = 1
    labels[2:9, 7:12] = 2
    labels[6:11, 2:6] = 5
    labels[0:3, 13:16] = 7
    labels[9:12, 12:16] = 7
    return labels


def _brute_cam(cams, labels, probs):
    cells = sorted(int(k) for k in set(labels.ravel()) - {0})
    out = np.zeros((len(cells), len(cams)))
    for c, cam in enumerate(cams):
        full = upsample(cam, *labels.shape)
        density = []
        for k in cells:
            total = count = 0
            for y in range(labels.shape[0]):
                for x in range(labels.shape[1]):
                    if labels[y, x] == k:
                        total += full[y, x]
                        count += 1
            density.append(total / count)
        top = max(density)
        out[:, c] = [probs[c] * (d / top if top > 0 else 1.0) for d in density]
    return out


@pytest.mark.parametrize("scale", [1, 4])
def test_cam_route_matches_a_loop_over_pixels(scale):
    labels = _labels()
    rng = np.random.default_rng(scale)
    cams = rng.random((3, 12 // scale, 16 // scale)).astype(np.float32) * 5
    cams[1] = 0                                   # a class whose map is zero: every cell gets the field's probability
    probs = np.array([0.9, 0.4, 0.2], np.float32)
    cells = localise.cell_numbers(labels)
    assert cells.tolist() == [1, 2, 5, 7]
    got = localise.cam_scores(cams, labels, cells, probs)
    np.testing.assert_allclose(got, _brute_cam(cams, labels, probs), rtol=1e-5, atol=1e-6)
    assert got[:, 1].tolist() == pytest.approx([0.4] * 4)
    assert (got.max(axis=0) == pytest.approx(probs)) and (got >= 0).all()


def test_cam_route_puts_a_class_in_its_cell():
    labels = _labels()
    cams = np.zeros((2, 12, 16), np.float32)
    cams[0][labels == 2] = 3.0                  # class 0 lit in cell 2 only, class 1 everywhere
    cams[1] = 1.0
    got = localise.cam_scores(cams, labels, localise.cell_numbers(labels), np.array([0.8, 0.5]))
    np.testing.assert_allclose(got[:, 0], [0, 0.8, 0, 0])
    np.testing.assert_allclose(got[:, 1], [0.5] * 4)


def test_boxes_and_areas():
    labels = _labels()
    cells = localise.cell_numbers(labels)
    np.testing.assert_array_equal(localise.boxes(labels, cells), [[1, 1, 6, 5], [7, 2, 12, 9], [2, 6, 6, 11],
                                                                  [12, 0, 16, 12]])
    assert localise.areas(labels, cells).tolist() == [(labels == k).sum() for k in cells]


def test_crops_are_centred_squares_with_black_borders_and_no_neighbours():
    labels = _labels()
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (*labels.shape, 4), dtype=np.uint8)
    cells = localise.cell_numbers(labels)
    cell_boxes = localise.boxes(labels, cells)
    squares = localise.square_boxes(cell_boxes)
    for k, (bx0, by0, bx1, by1), (x0, y0, side) in zip(cells, cell_boxes, squares):
        long = max(bx1 - bx0, by1 - by0)
        assert side == int(np.ceil(long * (1 + 2 * localise.MARGIN)))
        assert x0 <= bx0 and y0 <= by0 and x0 + side >= bx1 and y0 + side >= by1       # the cell inside
        assert abs((x0 + side / 2) - (bx0 + bx1) / 2) <= 0.5 and abs((y0 + side / 2) - (by0 + by1) / 2) <= 0.5
        crop = localise.cell_crops(image, labels, np.array([k]), int(side))[0]       # no resize at its own side
        expected = np.zeros_like(crop)
        for r in range(side):
            for c in range(side):
                y, x = y0 + r, x0 + c
                if 0 <= y < labels.shape[0] and 0 <= x < labels.shape[1] and labels[y, x] in (0, k):
                    expected[r, c] = image[y, x]
        np.testing.assert_array_equal(crop, expected)
    assert (squares[:, :2] < 0).any() or (squares[:, :2] + squares[:, 2:] > np.array([16, 12])).any()  # an edge crossed
    resized = localise.cell_crops(image, labels, cells, 32)
    assert resized.shape == (4, 32, 32, 4) and resized.dtype == np.uint8


def test_field_scale_crops_keep_the_cell_at_the_model_s_scale_on_black():
    """At scale 1 a cell's square lands unresized in the middle of a black canvas; at scale 2 it is
    the square resized to twice its side by the reader's rule; too big for the canvas, it fills it."""
    from hpa_jax.data.kaggle import resize_uint8

    labels = _labels()
    image = np.random.default_rng(1).integers(1, 256, (*labels.shape, 4), dtype=np.uint8)
    cells = localise.cell_numbers(labels)
    for k, (_, _, side) in zip(cells, localise.square_boxes(localise.boxes(labels, cells))):
        own = localise.cell_crops(image, labels, np.array([k]), int(side))[0]          # the square at its own size
        canvas = localise.cell_crops(image, labels, np.array([k]), 40, scale=1.0)[0]
        start = (40 - side) // 2
        np.testing.assert_array_equal(canvas[start:start + side, start:start + side], own)
        outside = np.ones((40, 40), bool)
        outside[start:start + side, start:start + side] = False
        assert not canvas[outside].any()
        doubled = localise.cell_crops(image, labels, np.array([k]), 40, scale=2.0)[0]
        start = (40 - 2 * side) // 2
        expected = np.stack([resize_uint8(own[..., c], 2 * int(side), "linear") for c in range(4)], -1)
        np.testing.assert_array_equal(doubled[start:start + 2 * side, start:start + 2 * side], expected)
        np.testing.assert_array_equal(localise.cell_crops(image, labels, np.array([k]), 8, scale=5.0),
                                      localise.cell_crops(image, labels, np.array([k]), 8))
    assert localise.field_scale((2048, 2048), 512, tile=False) == 0.25
    assert localise.field_scale((2048, 2048), 512, tile=True) == 1.0
    assert localise.field_scale((300, 400), 512, tile=True) == pytest.approx(512 / 300)


def test_crops_of_consecutive_fields_share_full_batches_and_come_back_in_order():
    """Fields of 3, 0, 5, 1 and 4 crops through batches of 4: every batch but the last is full, and
    each field gets the rows its own crops would (a fake model: a crop's first pixel, per class)."""
    from hpa_jax.classes import CLASS_NAMES
    from hpa_jax.folder.predict import CellCrops

    batches = []

    def predict(batch):
        batches.append(len(batch))
        return np.repeat(batch[:, 0, 0, :1].astype(np.float32), len(CLASS_NAMES), axis=1)

    crops = CellCrops(predict, 4)
    value = iter(range(1, 100))
    fields = [np.array([np.full((2, 2, 4), next(value), np.uint8) for _ in range(n)]).reshape(n, 2, 2, 4)
              for n in (3, 0, 5, 1, 4)]
    returned = [ready for i, field in enumerate(fields) for ready in crops.add(i, field)] + crops.flush()
    assert [i for i, _ in returned] == [0, 1, 2, 3, 4]
    for i, probs in returned:
        np.testing.assert_array_equal(probs, np.repeat(fields[i][:, 0, 0, :1], len(CLASS_NAMES), axis=1))
    assert batches == [4, 4, 4, 4] and len(crops.waiting) == 0   # 13 crops: 3 full batches and 1 padded


def test_blend_is_the_weighted_mean():
    cam, crop = np.array([[0.2, 1.0]]), np.array([[0.6, 0.0]])
    np.testing.assert_allclose(localise.blend(cam, crop), [[0.4, 0.5]])
    np.testing.assert_allclose(localise.blend(cam, crop, 1.0), cam)


# ---- --cells end to end on the tiny run ------------------------------------------------------

IDS = ("fieldA", "fieldB")


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """Two 64 px varied synthetic fields (the tiny run resizes them to its 32 px) and a folder of
    their true cell masks, numbered with a gap (cell k -> 2k) as a user's masks may be."""
    from PIL import Image

    from hpa_jax.classes import CHANNELS
    from hpa_jax.data import synthetic
    from hpa_jax.data.masks import write_labels

    root = tmp_path_factory.mktemp("varied")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(3)
    for image_id in IDS:
        field = synthetic.render_cells(synthetic.sample_labels(rng), 64, rng)
        for c, color in enumerate(CHANNELS):
            Image.fromarray(field.image[..., c]).save(images / f"{image_id}_{color}.png")
        write_labels(masks / f"{image_id}_cells.png", field.cells * 2)
    return images, masks


def _check_outputs(out, result):
    import pandas as pd

    from hpa_jax.classes import CLASS_NAMES
    from hpa_jax.data.masks import read_labels

    frame = pd.read_csv(out / "cells.csv")
    assert list(frame.columns) == ["Id", "cell", "x0", "y0", "x1", "y1", "area", *CLASS_NAMES, "Predicted_names"]
    assert not list(out.glob(".*-partial"))
    for image_id in IDS:
        labels = read_labels(out / "cells" / f"{image_id}_cells.png")
        rows = frame[frame["Id"] == image_id]
        assert rows["cell"].tolist() == localise.cell_numbers(labels).tolist() and len(rows)
        assert rows["area"].tolist() == [(labels == k).sum() for k in rows["cell"]]
        for row in rows.itertuples():
            ys, xs = np.nonzero(labels == row.cell)
            assert (row.x0, row.y0, row.x1, row.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert (out / "cells" / f"{image_id}_overlay.png").stat().st_size > 0
    probs = frame[list(CLASS_NAMES)].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs, result["cells"][list(CLASS_NAMES)].to_numpy(), atol=1e-6)
    return frame


def test_cells_end_to_end_segmented_blend(tiny_run, varied, tmp_path):
    from hpa_jax.classes import CLASS_NAMES
    from hpa_jax.folder import predict as folder_predict

    images, _ = varied
    result = folder_predict.predict_folder(tiny_run, images, tmp_path, cells=True, progress=False)
    _check_outputs(tmp_path, result)
    scores = result["cell_scores"]
    np.testing.assert_allclose(result["cells"][list(CLASS_NAMES)].to_numpy(),
                               localise.blend(scores["cam"], scores["crop"]), atol=1e-6)
    assert (tmp_path / "predictions.csv").is_file()


def test_cells_with_masks_keep_their_numbers(tiny_run, varied, tmp_path):
    from hpa_jax.data.masks import read_labels
    from hpa_jax.folder import predict as folder_predict

    images, masks = varied
    result = folder_predict.predict_folder(tiny_run, images, tmp_path, cells=True, cell_route="crop", masks=masks,
                                           progress=False)
    frame = _check_outputs(tmp_path, result)
    assert set(result["cell_scores"]) == {"crop"}
    for image_id in IDS:
        expected = read_labels(masks / f"{image_id}_cells.png")
        np.testing.assert_array_equal(read_labels(tmp_path / "cells" / f"{image_id}_cells.png"), expected)
    assert (frame["cell"] % 2 == 0).all()


def test_bad_masks_file_is_one_line_and_nothing_is_written(tiny_run, varied, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    images, masks = varied
    bad = tmp_path / "masks"
    bad.mkdir()
    (bad / "fieldA_cells.png").write_bytes((masks / "fieldA_cells.png").read_bytes())
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad / "fieldB_cells.png")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hpa_jax.predict", f"--workdir={tiny_run}", f"--images={images}",
                             f"--out={out}", "--cells", "--cell_route=cam", f"--masks={bad}"],
                            cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "fieldB_cells.png" in line and "not one plane" in line
    assert not out.exists() or not any(out.iterdir())


def test_tiled_cam_route_and_a_field_without_cells(tiny_run, varied, tmp_path):
    from PIL import Image

    from hpa_jax.classes import CHANNELS
    from hpa_jax.data.masks import read_labels
    from hpa_jax.folder import predict as folder_predict

    images = tmp_path / "images"
    images.mkdir()
    for color in CHANNELS:
        (images / f"fieldA_{color}.png").write_bytes((varied[0] / f"fieldA_{color}.png").read_bytes())
        Image.fromarray(np.zeros((48, 40), np.uint8)).save(images / f"empty_{color}.png")
    out = tmp_path / "out"
    result = folder_predict.predict_folder(tiny_run, images, out, fit="tile", cells=True, cell_route="cam",
                                           progress=False)
    frame = result["cells"]
    assert set(frame["Id"]) == {"fieldA"} and set(result["cell_scores"]) == {"cam"}
    assert frame["cell"].tolist() == localise.cell_numbers(read_labels(out / "cells" / "fieldA_cells.png")).tolist()
    assert not read_labels(out / "cells" / "empty_cells.png").any()
    assert (out / "cells" / "empty_overlay.png").is_file()
