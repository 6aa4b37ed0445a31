"""The Kaggle-layout reader on the 101 real images, and its one-line errors on bad files."""

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_jax.data import pipeline
from hpa_jax.data.kaggle import multi_hot, read_image, read_labels_csv
from hpa_jax.errors import DataError


def test_reads_the_real_kaggle_sample(shared_data):
    root = shared_data / "hpa_kaggle_sample"
    frame = read_labels_csv(root / "train.csv")
    assert len(frame) == 101
    raw = pd.read_csv(root / "train.csv")
    expected = np.zeros((101, 28), np.uint8)
    for i, target in enumerate(raw["Target"]):
        for token in str(target).split():
            expected[i, int(token)] = 1
    labels = multi_hot(frame["labels"])
    np.testing.assert_array_equal(labels, expected)
    source = pipeline.ImageSource(root / "train", frame["Id"].to_numpy(), labels)
    assert len(source) == 101
    for i in (0, 50, 100):
        example = source[i]
        assert example["image"].shape == (512, 512, 4) and example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["labels"], expected[i])
        # Channel order R, G, B, Y: each plane is the file of that colour, read independently by PIL.
        for c, color in enumerate(("red", "green", "blue", "yellow")):
            plane = np.asarray(Image.open(root / "train" / f"{frame['Id'][i]}_{color}.png"))
            np.testing.assert_array_equal(example["image"][..., c], plane)


def write_image(folder, image_id, size=16, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    for color in ("red", "green", "blue", "yellow"):
        if color not in skip:
            Image.fromarray(np.full((size, size), 7, np.uint8)).save(folder / f"{image_id}_{color}.png")


@pytest.mark.parametrize("content, message", [
    ("", "empty CSV"),
    ("Id,Target\n", "no rows"),
    ("Id,Label\na,1\n", "missing column"),
    ("Id,Target\na,1\na,2\n", "duplicate Id 'a'"),
    ("Id,Target\na,1 x\n", "not an integer"),
    ("Id,Target\na,1 28\n", "unknown class index 28"),
    ("Id,Target\na,\n", "no labels"),
])
def test_bad_label_files_are_named(tmp_path, content, message):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_labels_csv(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_images_are_named(tmp_path):
    write_image(tmp_path, "ok")
    assert read_image(tmp_path, "ok").shape == (16, 16, 4)
    assert read_image(tmp_path, "ok", size=8).shape == (8, 8, 4)

    write_image(tmp_path, "nogreen", skip=("green",))
    with pytest.raises(DataError, match=r"nogreen_green\.png: missing green channel"):
        read_image(tmp_path, "nogreen")

    write_image(tmp_path, "corrupt")
    (tmp_path / "corrupt_blue.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"corrupt_blue\.png: cannot decode PNG"):
        read_image(tmp_path, "corrupt")

    write_image(tmp_path, "rgb")
    Image.new("RGB", (16, 16)).save(tmp_path / "rgb_yellow.png")
    with pytest.raises(DataError, match=r"rgb_yellow\.png: expected an 8-bit grayscale PNG"):
        read_image(tmp_path, "rgb")

    write_image(tmp_path, "shape")
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "shape_green.png")
    with pytest.raises(DataError, match=r"shape_green\.png: size 16x8 differs"):
        read_image(tmp_path, "shape")


def test_truncated_png_is_named(tmp_path, shared_data):
    src = shared_data / "hpa_kaggle_sample" / "train"
    image_id = sorted(p.name for p in src.glob("*_red.png"))[0][: -len("_red.png")]
    for color in ("red", "green", "blue", "yellow"):
        shutil.copy(src / f"{image_id}_{color}.png", tmp_path)
    data = (tmp_path / f"{image_id}_blue.png").read_bytes()
    (tmp_path / f"{image_id}_blue.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="_blue.png: cannot decode PNG"):
        read_image(tmp_path, image_id)
