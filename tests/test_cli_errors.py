"""A damaged file met at a command line's boundary (orbax, tensorstore, numpy, pandas, json) is one
line naming the file, while a genuine bug keeps its type and traceback."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hpa_jax.data import pack, pipeline, synthetic
from hpa_jax.errors import CheckpointError, DataError, file_errors
from hpa_jax.models import convert

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_corrupt_config_json_is_one_line(tmp_path):
    """`evaluate` reads the run's config.json first: cut short, it is one line naming it."""
    (tmp_path / "config.json").write_text('{"model": {"name": "resn')
    result = subprocess.run([sys.executable, "-m", "hpa_jax.main", "--config=configs/quickstart.py",
                             f"--workdir={tmp_path}", "--mode=evaluate"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"hpa_jax: error: {tmp_path / 'config.json'}: reading failed: ")


def test_truncated_converted_weights_are_one_line(tmp_path):
    """A converted-weights folder whose array file was cut short (a copy that did not finish)."""
    out = convert.save_pretrained(tmp_path / "weights", {"params": {"kernel": np.arange(4096.0)}}, {"model": "x"})
    data = max((p for p in out.rglob("*") if p.is_file() and "/d/" in p.as_posix()), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointError) as error:
        convert.load_pretrained(out)
    message = str(error.value)
    assert message.startswith(f"{out}: reading the converted weights failed: ") and "\n" not in message


def test_truncated_packed_store_is_one_line(tmp_path):
    """A packed store whose images file was cut short fails when opened, naming the file, rather
    than in a reader thread mid-epoch."""
    root = synthetic.generate(tmp_path / "synthetic", num_train=4, num_test=1, image_size=32)
    ids = pd.read_csv(root / "train.csv", dtype=str)["Id"]
    store = pack.pack_folder(root / "train", ids, tmp_path / "packed", progress=False)
    images = store / pack.IMAGES
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(DataError) as error:
        pipeline.PackedSource(store, ids, np.zeros((len(ids), 28), np.uint8))
    assert str(error.value).startswith(f"{images}: reading failed: ") and "\n" not in str(error.value)


def test_a_bug_inside_keeps_its_type():
    with pytest.raises(TypeError):
        with file_errors("some.json"):
            len(3)


@pytest.mark.parametrize("args, named", [
    (["--config=configs/quickstart.py", "--config.train.bogus=1"],
     "--config.train.bogus: the config has no field train.bogus"),
    (["--config=configs/no_such_config.py"], "--config=configs/no_such_config.py: configs/no_such_config.py is not "
                                             "a config file (nor a config shipped with the package: "),
    (["--config=configs/quickstart.py", "--config.optim.lr=-1"], "optim.lr=-1.0: expected a number >= 0"),
    (["--config=configs/quickstart.py", "--config.train.num_epochs=0"], "train.num_epochs=0: expected an integer >= 1"),
    (["--config=configs/quickstart.py", "--config.data.image_size=64"],
     "data.crop_size=112 is larger than data.image_size=64, the images it is cut from"),
])
def test_a_config_that_cannot_work_is_one_line_before_any_work(tmp_path, args, named):
    """What ml_collections and absl would end in a traceback (an unknown field, a config file that
    is not there) and what training would accept (a negative LR, no epochs, a crop larger than the
    images) each end the command at start-up: one line naming it, nothing written."""
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "hpa_jax.main", *args, f"--workdir={workdir}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("hpa_jax: error: ") and named in line, line
    assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    workdir.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "hpa_jax.main", "--config=configs/quickstart.py",
                             f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = result.stderr.strip().splitlines()
    assert line == f"hpa_jax: error: --workdir={workdir}: {workdir} is a file, not a folder"
    assert workdir.read_text() == "not a folder"
