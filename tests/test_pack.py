"""Packed stores: same pixels as decoding the channel files, written whole or not at all, and
selected by `data.packed`."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import default
from hpa_jax.data import pack, pipeline
from hpa_jax.data.datasets import load_dataset
from hpa_jax.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
COLORS = ("red", "green", "blue", "yellow")
SIZE = 48


def kaggle_copy(shared_data, tmp_path, num=10) -> pd.DataFrame:
    """`num` real Kaggle images (every 10th row, spread over the sample) in a Kaggle-layout folder."""
    src = shared_data / "hpa_kaggle_sample"
    frame = pd.read_csv(src / "train.csv").iloc[::10].head(num).reset_index(drop=True)
    (tmp_path / "train").mkdir()
    for image_id in frame["Id"]:
        for color in COLORS:
            shutil.copy(src / "train" / f"{image_id}_{color}.png", tmp_path / "train")
    frame.to_csv(tmp_path / "train.csv", index=False)
    return frame


def run_pack(*args):
    return subprocess.run([sys.executable, "-m", "hpa_jax.data.pack", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_packed_source_is_bit_identical_to_image_source(shared_data, tmp_path):
    frame = kaggle_copy(shared_data, tmp_path)
    ids = frame["Id"].to_numpy()
    store = pack.pack_folder(tmp_path / "train", ids, tmp_path / "P" / "train", size=SIZE, num_threads=2,
                             progress=False)
    labels = np.eye(len(ids), 28, dtype=np.uint8)
    order = np.array([3, 0, 7, 7, 9, 1])        # any order, repeats (oversampling) allowed
    packed = pipeline.PackedSource(store, ids[order], labels[order])
    decoded = pipeline.ImageSource(tmp_path / "train", ids[order], labels[order], image_size=SIZE)
    assert len(packed) == len(decoded) == len(order)
    for i in range(len(order)):
        a, b = packed[i], decoded[i]
        assert a.keys() == b.keys() == {"image", "labels", "index"}
        assert a["image"].dtype == np.uint8 and a["image"].shape == (SIZE, SIZE, 4)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
        assert a["index"] == b["index"] == i
    # The same batches through grain (threads), and the same augmented crops for the same seed.
    kwargs = dict(batch_size=3, crop_size=32, seed=1, epoch=0, num_threads=2, prefetch=1)
    for x, y in zip(pipeline.train_batches(packed, **kwargs), pipeline.train_batches(decoded, **kwargs), strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])

    with pytest.raises(DataError, match="1 Id.*not in the packed store: nope"):
        pipeline.PackedSource(store, np.array([ids[0], "nope"]), labels[:2])
    with pytest.raises(DataError, match="not a packed store"):
        pipeline.PackedSource(tmp_path / "P", ids, labels)


def test_cli_writes_a_complete_store_or_nothing(shared_data, tmp_path):
    frame = kaggle_copy(shared_data, tmp_path, num=4)
    out = tmp_path / "P" / "train"
    result = run_pack(f"--data_dir={tmp_path}", f"--out={out}", f"--size={SIZE}", "--num_threads=1")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == 4 and meta["size"] == SIZE and meta["format"] == "png"
    assert meta["source"] == str((tmp_path / "train").resolve()) and meta["created_by"].startswith("hpa_jax.data.pack")
    assert pd.read_csv(out / "index.csv")["Id"].tolist() == frame["Id"].tolist()
    images = np.load(out / "images.u8", mmap_mode="r")
    assert images.shape == (4, SIZE, SIZE, 4) and images.dtype == np.uint8
    assert "img/s" in result.stderr                                  # tqdm's progress bar with its rate

    # An existing store is not overwritten by accident.
    again = run_pack(f"--data_dir={tmp_path}", f"--out={out}", f"--size={SIZE}")
    assert again.returncode != 0 and "already exists" in again.stderr

    # A corrupt channel file: one-line error naming it, and no store (nor partial folder) left behind.
    bad = tmp_path / "train" / f"{frame['Id'][2]}_green.png"
    bad.write_bytes(bad.read_bytes()[:200])
    failed_out = tmp_path / "Q" / "train"
    failed = run_pack(f"--data_dir={tmp_path}", f"--out={failed_out}", f"--size={SIZE}", "--num_threads=1")
    assert failed.returncode != 0
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("hpa_jax.data.pack: error:") and str(bad) in last
    assert "Traceback" not in failed.stderr
    assert not failed_out.exists() and list(failed_out.parent.iterdir()) == []


def test_data_packed_selects_packed_sources(shared_data, tmp_path):
    frame = kaggle_copy(shared_data, tmp_path, num=6)
    ids = frame["Id"].to_numpy()
    pack.pack_folder(tmp_path / "train", ids, tmp_path / "P" / "train", size=SIZE, progress=False)
    pd.DataFrame({"Id": ids[:2], "Predicted": ["0", "0"]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    config = default.get_config()
    config.data.dir = str(tmp_path)
    config.data.num_folds = 2
    dataset = load_dataset(config)
    assert isinstance(dataset.train_source(np.arange(6), config.data), pipeline.ImageSource)   # default: decode

    config.data.packed = str(tmp_path / "P")
    train_idx, _ = dataset.split(0)
    source = dataset.train_source(train_idx, config.data)
    assert isinstance(source, pipeline.PackedSource) and len(source) == len(train_idx)
    np.testing.assert_array_equal(source[0]["labels"], dataset.train_labels[train_idx[0]])
    with pytest.raises(DataError, match="not a packed store"):          # no P/test written yet
        dataset.test_source(config.data)

    # The test store: the test Ids are packed from their own folder (here the same images).
    shutil.copytree(tmp_path / "train", tmp_path / "test")
    pack.pack_folder(tmp_path / "test", ids[:2], tmp_path / "P" / "test", size=SIZE, progress=False)
    test = dataset.test_source(config.data)
    assert isinstance(test, pipeline.PackedSource) and len(test) == 2 and test[1]["labels"].sum() == 0

    config.data.image_size = 2 * SIZE                                   # a store of another size is refused
    with pytest.raises(ValueError, match=f"packed at {SIZE} px"):
        dataset.train_source(train_idx, config.data)
