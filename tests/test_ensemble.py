"""Ensembling prediction files: alignment by Id, the averaging methods, and the command line."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hpa_jax import postprocess
from hpa_jax.evaluation import ensemble
from hpa_jax.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
C = 28


def save(path, ids, probs):
    np.savez(path, ids=np.asarray(ids, str), probs=np.asarray(probs, np.float32))
    return path


def random_probs(n, seed):
    return np.random.default_rng(seed).random((n, C)).astype(np.float32)


IDS = np.array([f"img{i:03d}" for i in range(40)])


@pytest.mark.parametrize("method,weights", [("mean", None), ("weighted", [1, 3, 2]), ("rank", None)])
def test_ensemble_of_identical_files_is_the_file(tmp_path, method, weights):
    probs = random_probs(len(IDS), 0)
    paths = [save(tmp_path / f"{k}.npz", IDS, probs) for k in range(3)]
    ids, aligned = ensemble.read_aligned(paths)
    combined = ensemble.combine(aligned, method, weights)
    expected = ensemble.rank_scale(probs) if method == "rank" else probs
    np.testing.assert_array_equal(ids, IDS)  # IDS is sorted already
    np.testing.assert_allclose(combined, expected, rtol=1e-6)


def test_rows_are_aligned_by_id(tmp_path):
    a, b = random_probs(len(IDS), 1), random_probs(len(IDS), 2)
    perm = np.random.default_rng(0).permutation(len(IDS))
    paths = [save(tmp_path / "a.npz", IDS, a), save(tmp_path / "b.npz", IDS[perm], b[perm])]
    ids, aligned = ensemble.read_aligned(paths)
    combined = dict(zip(ids, ensemble.combine(aligned, "weighted", [1, 3])))
    for i, image_id in enumerate(IDS):
        np.testing.assert_allclose(combined[image_id], (a[i] + 3 * b[i]) / 4, rtol=1e-6)


def test_a_different_id_set_is_an_error_naming_the_ids_and_the_file(tmp_path):
    a = save(tmp_path / "a.npz", IDS, random_probs(len(IDS), 0))
    b = save(tmp_path / "b.npz", np.append(IDS[3:], "stranger"), random_probs(len(IDS) - 2, 0))
    with pytest.raises(DataError) as error:
        ensemble.read_aligned([a, b])
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(b))
    assert "missing 3 Id(s)" in message and all(i in message for i in IDS[:3]) and "stranger" in message


def test_many_missing_ids_are_listed_up_to_ten(tmp_path):
    a = save(tmp_path / "a.npz", IDS, random_probs(len(IDS), 0))
    b = save(tmp_path / "b.npz", IDS[:5], random_probs(5, 0))
    with pytest.raises(DataError, match=r"missing 35 Id\(s\).*img014, \.\.\. \(35 in all\)"):
        ensemble.read_aligned([a, b])


def test_rank_mean_ignores_a_monotone_transform_of_one_input():
    a, b = random_probs(len(IDS), 3), random_probs(len(IDS), 4)
    squashed = 10 * np.log(b.astype(np.float64)) - 3  # strictly increasing, another scale
    np.testing.assert_array_equal(ensemble.combine([a, b], "rank"), ensemble.combine([a, squashed], "rank"))
    assert not np.allclose(ensemble.combine([a, b]), ensemble.combine([a, squashed]))


def test_pickled_ids_and_bad_thresholds_are_one_line_errors(tmp_path):
    path = tmp_path / "object.npz"
    np.savez(path, ids=np.array(list(IDS), dtype=object), probs=random_probs(len(IDS), 0))
    with pytest.raises(DataError, match="pickled object array"):
        ensemble.read_probs(path)
    bad = tmp_path / "thresholds.json"
    bad.write_text(json.dumps({"thresholds": [0.3] * 5}))
    with pytest.raises(DataError, match=f"{bad}: expected"):
        ensemble.read_thresholds(bad)
    bad.write_text(json.dumps({"thresholds": [0.3] * C}))
    np.testing.assert_array_equal(ensemble.read_thresholds(bad), np.full(C, 0.3, np.float32))


def run_cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "hpa_jax.ensemble", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_command_line_writes_the_submission_in_sample_order(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random((len(IDS), C)) < 0.2
    labels[np.arange(len(IDS)), rng.integers(0, C, len(IDS))] = True
    pd.DataFrame({"Id": IDS, "Target": [" ".join(map(str, np.flatnonzero(row))) for row in labels]}).to_csv(
        tmp_path / "train.csv", index=False)
    oof = [save(tmp_path / f"oof{k}.npz", IDS[::-1], np.clip(labels[::-1] * 0.5 + random_probs(len(IDS), k) * 0.6,
                                                            0, 1)) for k in range(2)]
    test_ids = np.array([f"test{i}" for i in range(15)])
    inputs = [save(tmp_path / f"test{k}.npz", test_ids[rng.permutation(15)], random_probs(15, 10 + k))
              for k in range(2)]
    sample_order = test_ids[rng.permutation(15)]
    pd.DataFrame({"Id": sample_order, "Predicted": "0"}).to_csv(tmp_path / "sample_submission.csv", index=False)
    out = tmp_path / "out"

    result = run_cli("--inputs", *inputs, "--fit_thresholds", *oof, "--labels", tmp_path / "train.csv",
                     "--sample_submission", tmp_path / "sample_submission.csv", "--force_one", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    submission = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    assert submission["Id"].tolist() == sample_order.tolist()
    assert all(row.split() for row in submission["Predicted"])  # --force_one: no empty row
    with np.load(out / "ensemble_probs.npz") as saved:
        assert saved["ids"].tolist() == sample_order.tolist()
        probs = saved["probs"]
    fit = json.loads((out / "thresholds.json").read_text())
    _, oof_probs = ensemble.read_aligned(oof)
    expected, score = postprocess.search_thresholds(ensemble.combine(oof_probs), labels)
    np.testing.assert_array_equal(np.float32(fit["thresholds"]), expected)
    assert fit["oof_macro_f1"] == pytest.approx(score)
    preds = postprocess.apply_thresholds(probs, np.float32(fit["thresholds"]), force_one=True)
    assert submission["Predicted"].tolist() == [postprocess.format_predicted(row) for row in preds]
    assert sorted(p.name for p in out.iterdir()) == ["ensemble_probs.npz", "submission.csv", "thresholds.json"]


def test_command_line_mismatch_is_one_line_and_writes_nothing(tmp_path):
    a = save(tmp_path / "a.npz", IDS, random_probs(len(IDS), 0))
    b = save(tmp_path / "b.npz", IDS[1:], random_probs(len(IDS) - 1, 0))
    result = run_cli("--inputs", a, b, "--out", tmp_path / "out")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"hpa_jax.ensemble: error: {b}: missing 1 Id(s) of {a}: img000"]
    assert not (tmp_path / "out").exists()
