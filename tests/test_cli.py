"""The command line end to end in a subprocess, as a user runs it, on a tiny synthetic dataset."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pandas as pd

from hpa_jax.evaluation.ensemble import read_thresholds

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/quickstart.py",
    "--config.data.synthetic.num_train=64", "--config.data.synthetic.num_test=21",
    "--config.data.synthetic.image_size=64", "--config.data.crop_size=48",
    "--config.data.num_folds=4",
    "--config.model.width=8", "--config.model.head.layers=((32, 0.25),)",
    "--config.train.batch_size=16", "--config.eval.batch_size=16", "--config.train.num_epochs=1",
    # the paper's losses, which the quickstart leaves off: every command-line test goes through them
    "--config.loss.e_alpha=0.99", "--config.loss.hard_sample_ratio=0.75",
]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "hpa_jax.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_train_evaluate_predict(tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", f"--workdir={workdir}",
                     "--mode=train,evaluate,predict")
    assert result.returncode == 0, result.stderr[-3000:]

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert len(records[0]["val_per_class_f1"]) == 28 and 0 <= records[0]["val_macro_f1"] <= 1
    evaluation = json.loads((workdir / "eval_metrics.json").read_text())
    folds = pd.read_csv(workdir / "folds.csv")
    assert len(folds) == 64 and evaluation["num_images"] == (folds["fold"] == 0).sum()
    assert evaluation["checkpoint_step"] == records[0]["step"] == (64 - evaluation["num_images"]) // 16
    # the last lines: the score four ways, the honest one labelled as such, as eval_metrics.json has them
    last = result.stdout.strip().splitlines()[-5:]
    assert last[0].startswith("validation macro-F1, ") and "checkpoint step" in last[0]
    figures = {m.group(1): float(m.group(2)) for m in map(re.compile(r"^  (.+?) +(\d\.\d{4})\b").match, last[1:])}
    assert figures == {"at threshold 0.5": round(evaluation["val_macro_f1"], 4),
                       "per-class thresholds, cross-fitted": round(evaluation["val_macro_f1_cross_fitted"], 4),
                       "per-class thresholds, in-sample": round(evaluation["val_macro_f1_fitted_in_sample"], 4),
                       "label-prior baseline": round(evaluation["label_prior_macro_f1"], 4)}
    assert "honest" in last[2] and "optimistic" in last[3]
    # training's epoch record scored the same checkpoint's validation predictions the same ways
    assert records[0]["val_macro_f1_fitted"] == evaluation["val_macro_f1_fitted_in_sample"]
    assert records[0]["val_macro_f1_cross_fitted"] == evaluation["val_macro_f1_cross_fitted"]
    assert "| 27 | Rods & rings |" in (workdir / "report.md").read_text()

    submission = pd.read_csv(workdir / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["Id", "Predicted"]
    dataset = next((tmp_path / "cache").glob("synthetic-*"))
    expected_ids = pd.read_csv(dataset / "sample_submission.csv", dtype=str)["Id"]
    assert submission["Id"].tolist() == expected_ids.tolist() and len(submission) == 21
    tokens = [int(t) for row in submission["Predicted"] for t in row.split()]
    assert all(0 <= t < 28 for t in tokens)
    assert (workdir / "training_curves.png").stat().st_size > 0

    # Same config and seed, fresh workdir: the same numbers.
    again = run_cli(*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", f"--workdir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    records_again = [json.loads(line) for line in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    for record in records + records_again:
        record.pop("epoch_seconds")
    assert records_again == records


def test_real_data_config_without_data_dir_says_what_to_do(tmp_path):
    result = run_cli("--config=configs/resnet50.py", f"--workdir={tmp_path}")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "data.dir is not set" in message and "--config.data.dir=" in message and "quickstart" in message
    assert "Traceback" not in result.stderr


def test_evaluate_without_checkpoint_is_a_one_line_error(tmp_path):
    result = run_cli(*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", f"--workdir={tmp_path / 'x'}",
                     "--mode=evaluate")
    assert result.returncode != 0
    assert "no checkpoint found" in result.stderr and "Traceback" not in result.stderr


def test_cv_then_ensemble_gives_the_same_submission(tmp_path):
    """--mode=cv writes out-of-fold and per-fold test probabilities, thresholds and a report; the
    ensemble command on its fold files and thresholds reproduces its submission."""
    run = tmp_path / "cv"
    cache = f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}"
    result = run_cli(*TINY, cache, "--config.data.num_folds=2", f"--workdir={run}", "--mode=cv")
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = next((tmp_path / "cache").glob("synthetic-*"))
    train_ids = pd.read_csv(dataset / "train.csv", dtype=str)["Id"]

    oof = np.load(run / "oof_probs.npz")
    assert sorted(oof["ids"]) == sorted(train_ids) and oof["probs"].shape == (64, 28)
    for fold in (0, 1):
        val = np.load(run / f"fold{fold}" / "val_probs.npz")
        rows = [list(oof["ids"]).index(i) for i in val["ids"]]
        np.testing.assert_array_equal(oof["probs"][rows], val["probs"])
    assert read_thresholds(run / "thresholds.json").shape == (28,)
    text = (run / "report.md").read_text()
    assert "cross-fitted" in text and text.count("\n| 0 | ") == 2      # fold row and class row
    assert (run / "per_class_f1.png").stat().st_size and (run / "thresholds.png").stat().st_size

    ensembled = subprocess.run(
        [sys.executable, "-m", "hpa_jax.ensemble", "--inputs", str(run / "fold0" / "test_probs.npz"),
         str(run / "fold1" / "test_probs.npz"), "--thresholds", str(run / "thresholds.json"),
         "--sample_submission", str(dataset / "sample_submission.csv"), "--out", str(tmp_path / "ens")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ensembled.returncode == 0, ensembled.stderr[-2000:]
    assert (tmp_path / "ens" / "submission.csv").read_text() == (run / "submission.csv").read_text()


def test_lr_find_writes_curve_and_no_checkpoint(tmp_path):
    workdir = tmp_path / "lrf"
    result = run_cli(*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", f"--workdir={workdir}",
                     "--mode=lr_find", "--config.lr_find.num_steps=12")
    assert result.returncode == 0, result.stderr[-3000:]
    curve = pd.read_csv(workdir / "lr_find.csv")
    assert list(curve.columns) == ["step", "lr", "loss", "smoothed_loss"] and 2 <= len(curve) <= 12
    ratios = curve["lr"].to_numpy()[1:] / curve["lr"].to_numpy()[:-1]
    assert np.allclose(ratios, (10.0 / 1e-5) ** (1 / 11), rtol=1e-4)      # exponential growth per batch
    assert (workdir / "lr_find.png").stat().st_size > 0
    assert not (workdir / "checkpoints").exists() and "suggested" in result.stdout


def test_resumed_run_sees_the_same_batches(tmp_path):
    """Interrupted after epoch 1 and resumed, a run ends with the same numbers as an uninterrupted
    one: the resumed epoch sees exactly the batches (order, crops, flips) it would have seen."""
    import shutil

    args = [*TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}", "--config.train.num_epochs=2"]
    full = run_cli(*args, f"--workdir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    records = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "resumed" / "metrics.jsonl").write_text(records[0] + "\n")
    last_step = json.loads(records[1])["step"]
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(last_step))   # as if killed during epoch 2

    resumed = run_cli(*args, f"--workdir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    again = json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[1])
    expected = json.loads(records[1])
    for record in (again, expected):
        record.pop("epoch_seconds")
    assert again == expected
