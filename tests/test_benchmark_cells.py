"""`scripts/benchmark.py cells` at test size, on the session's tiny run (no training here): the
scoring of a run's `--cells` output against a varied dataset's truth, with a reference that must
score 1 (each cell given its own true classes, on the true masks), the report, and the
segmentation rows against `matching.scores` recomputed by hand."""

import pathlib
import sys

import numpy as np
import pytest

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data import synthetic

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))   # the benchmark scripts are not a package

import benchmark_cells  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("varied"), num_train=1, num_test=3, image_size=64, seed=3,
                              varied_cells=True)


def test_scores_of_a_run_and_a_reference_that_must_be_perfect(tiny_run, dataset, tmp_path, monkeypatch):
    from hpa_jax.cells import localise
    from hpa_jax.folder.predict import predict_folder

    scales, cell_crops = [], localise.cell_crops

    def recorded(*args, scale=None, **kwargs):
        scales.append(scale)
        return cell_crops(*args, scale=scale, **kwargs)

    monkeypatch.setattr(localise, "cell_crops", recorded)
    found = benchmark_cells.score_run(tiny_run, dataset, tmp_path)
    assert None in scales and any(s is not None for s in scales)     # both --cell_crop=fill and field_scale ran
    assert set(found) == set(benchmark_cells.MASKS)
    for rows in found.values():
        assert set(rows) == set(benchmark_cells.ROWS)
        for value, per_class in rows.values():
            assert 0 <= value <= 1 and per_class.shape == (len(CLASS_NAMES) + 1,)

    # the rows of cells.csv, the label images written and the truth line up: each cell scored with
    # its own true classes on the true masks is perfect, and the floors are what they say
    truth = benchmark_cells.cell_truth(dataset)
    masks = dataset / synthetic.CELLS_FOLDER
    result = predict_folder(tiny_run, dataset / "test", tmp_path / "again", cells=True, masks=masks, progress=False)
    own = np.zeros((len(result["cells"]), len(CLASS_NAMES)), np.float32)
    for row, (image_id, cell) in enumerate(zip(result["cells"]["Id"], result["cells"]["cell"])):
        own[row, list(truth[image_id][cell])] = 1
    scores = benchmark_cells.route_scores(result, result["cell_scores"]["crop"], truth)
    probs = dict(zip(result["ids"], result["probs"]))
    for row, image_id in enumerate(result["cells"]["Id"]):
        np.testing.assert_allclose(scores[benchmark_cells.FLOOR][row], probs[image_id])
        assert set(np.flatnonzero(scores[benchmark_cells.TRUE_LABELS][row])) == set().union(*truth[image_id].values())
    perfect = benchmark_cells.map_scores(result, truth, dataset, tmp_path / "again" / "cells", {"own": own})
    assert perfect["own"][0] == pytest.approx(1.0)


def test_segmentation_rows_and_report(tmp_path):
    from hpa_jax.cells.matching import match
    from hpa_jax.cells.segment import segment

    rows = benchmark_cells.segmentation_rows([64], 4)
    assert rows[0]["fields"] == 8 and rows[0]["size"] == 64
    hits = true = pred = 0
    for index in range(8):                     # the same fields, counted here
        rng = np.random.default_rng(np.random.SeedSequence([64, index, 0xCE11]))
        field = synthetic.render_cells(synthetic.sample_labels(rng), 64, rng)
        m = match(field.cells, segment(field.image).cells, 0.6)
        hits, true, pred = hits + len(m.true), true + m.num_true, pred + m.num_pred
    assert rows[0]["cells"]["f1"] == pytest.approx(2 * hits / (true + pred))

    class Args:
        num_test, image_size, num_train = 3, 64, 1
    per_seed = {name: (0.5, np.full(len(CLASS_NAMES) + 1, 0.5)) for name in benchmark_cells.ROWS}
    found = {0: {m: per_seed for m in benchmark_cells.MASKS}, 1: {m: per_seed for m in benchmark_cells.MASKS}}
    per_class = {name: np.full(len(CLASS_NAMES) + 1, 0.5) for name in benchmark_cells.ROWS}
    text = benchmark_cells.report(Args, found, per_class, rows, "", 60.0, {"cells": 10, "negative": 2, "classes": 5})
    assert "| CAM route | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.500 / 0.500, 0.500 / 0.500 | +0.000, +0.000 |" in text
    assert "| 64 px | 8 |" in text and "Real fields" not in text
