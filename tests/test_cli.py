"""The command line end to end in a subprocess, as a user runs it, on a tiny synthetic dataset."""

import json
import pathlib
import subprocess
import sys

import pandas as pd

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/quickstart.py",
    "--config.data.synthetic.num_train=64", "--config.data.synthetic.num_test=21",
    "--config.data.synthetic.image_size=64", "--config.data.crop_size=48",
    "--config.data.num_folds=4",
    "--config.model.width=8", "--config.model.head.layers=((32, 0.25),)",
    "--config.train.batch_size=16", "--config.eval.batch_size=16", "--config.train.num_epochs=1",
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
    assert evaluation["num_images"] == 16 and evaluation["checkpoint_step"] == records[0]["step"] == 3
    assert "label-prior baseline" in result.stdout

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
