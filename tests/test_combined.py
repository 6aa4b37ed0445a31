"""Training sets combined from several sources (`data.sources`), on the real files: the 101
Kaggle PNGs and the 8 HPAv18 JPEGs of ../shared/data, plus one HPAv18-style copy of a Kaggle
image planted among the JPEGs."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from PIL import Image

from configs import default
from hpa_jax.data import combined, kaggle, pack, pipeline, sources, stats
from hpa_jax.data.datasets import load_dataset
from hpa_jax.errors import ConfigError, DataError

SIZE = 48
PLANTED = "99999_1_A1_1"   # an HPAv18-style Id for the copy of a Kaggle image
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hpav18_copy(kaggle_dir, image_id, out_dir, new_id, size=1024):
    """Writes a Kaggle image as HPAv18 publishes its fields: an RGB JPEG per channel, coloured like
    it (yellow = red + green), at another size."""
    planes = {c: np.asarray(Image.open(kaggle_dir / f"{image_id}_{c}.png").resize((size, size), Image.BILINEAR))
              for c in ("red", "green", "blue", "yellow")}
    zero = np.zeros((size, size), np.uint8)
    rgb = {"red": (planes["red"], zero, zero), "green": (zero, planes["green"], zero),
           "blue": (zero, zero, planes["blue"]), "yellow": (planes["yellow"], planes["yellow"], zero)}
    for color, channels in rgb.items():
        Image.fromarray(np.stack(channels, -1)).save(out_dir / f"{new_id}_{color}.jpg", quality=90)


@pytest.fixture
def data_dir(shared_data, tmp_path):
    """D/train + D/train.csv: the Kaggle sample (links); D/hpav18/ + D/HPAv18RBGY_wodpl.csv: the 8
    HPAv18 JPEGs and a JPEG copy of the 4th Kaggle image, with that image's labels."""
    kaggle_src = shared_data / "hpa_kaggle_sample"
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(kaggle_src / "train", root / "train")
    os.symlink(kaggle_src / "train.csv", root / "train.csv")
    (root / "hpav18").mkdir()
    for path in (shared_data / "hpav18_sample" / "raw_jpg").iterdir():
        os.symlink(path, root / "hpav18" / path.name)
    kaggle_rows = pd.read_csv(kaggle_src / "train.csv")
    original = kaggle_rows["Id"][3]
    hpav18_copy(kaggle_src / "train", original, root / "hpav18", PLANTED)
    external = pd.read_csv(shared_data / "hpav18_sample" / "train.csv")
    external = pd.concat([external, pd.DataFrame({"Id": [PLANTED], "Target": [kaggle_rows["Target"][3]]})])
    external.to_csv(root / "HPAv18RBGY_wodpl.csv", index=False)
    return root


def paper_config(data_dir, tmp_path, duplicates="none"):
    config = default.with_training_set(default.get_config(), "kaggle+hpav18")
    config.data.dir = str(data_dir)
    config.data.image_size = SIZE
    config.data.duplicates = duplicates
    config.data.duplicate_cache = str(tmp_path / "cache")
    config.data.num_folds = 3
    config.data.num_threads = 2
    return config


def test_rows_carry_their_source_and_folds_are_iterstrats_over_the_union(data_dir, tmp_path):
    config = paper_config(data_dir, tmp_path)
    dataset = load_dataset(config)
    kaggle_rows = pd.read_csv(data_dir / "train.csv", dtype=str)
    external = pd.read_csv(data_dir / "HPAv18RBGY_wodpl.csv", dtype=str)
    assert list(dataset.train_ids) == list(kaggle_rows["Id"]) + list(external["Id"])
    assert list(dataset.train_source_names) == ["kaggle"] * 101 + ["hpav18"] * 9

    labels = np.zeros((110, 28), np.uint8)
    for i, target in enumerate(list(kaggle_rows["Target"]) + list(external["Target"])):
        labels[i, [int(t) for t in target.split()]] = 1
    np.testing.assert_array_equal(dataset.train_labels, labels)
    expected = np.full(110, -1)
    splitter = MultilabelStratifiedKFold(n_splits=3, shuffle=True, random_state=config.seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(110), labels)):
        expected[held_out] = fold
    np.testing.assert_array_equal(dataset.folds, expected)

    # Each row is read from its own folder in its own format, resized to data.image_size.
    rows = np.array([108, 0, 105, 7, 105])     # mixed, repeated (as oversampling repeats rows)
    source = dataset.train_source(rows, config.data)
    assert isinstance(source, pipeline.MixedSource) and len(source) == 5
    np.testing.assert_array_equal(source.labels, labels[rows])
    for position, row in enumerate(rows):
        image_id = dataset.train_ids[row]
        folder, fmt = (data_dir / "train", "png") if row < 101 else (data_dir / "hpav18", "jpg")
        example = source[position]
        np.testing.assert_array_equal(example["image"], sources.read_sample(folder, image_id, fmt=fmt, size=SIZE))
        assert example["index"] == position and source.ids[position] == image_id


def test_a_cross_source_duplicate_is_dropped_on_the_external_side(data_dir, tmp_path, capsys):
    dataset = load_dataset(paper_config(data_dir, tmp_path, duplicates="drop"))
    ids = list(dataset.train_ids)
    original = pd.read_csv(data_dir / "train.csv")["Id"][3]
    assert PLANTED not in ids and original in ids
    assert len(ids) == 109 and list(dataset.train_source_names).count("hpav18") == 8
    assert "hpav18: 1 dropped" in capsys.readouterr().out
    # Listed the other way round, the external copy is the one kept.
    config = paper_config(data_dir, tmp_path, duplicates="drop")
    config.data.sources = tuple(reversed(config.data.sources))
    ids = list(load_dataset(config).train_ids)
    assert PLANTED in ids and original not in ids


def test_the_packed_union_equals_reading_each_source(data_dir, tmp_path):
    config = paper_config(data_dir, tmp_path)
    union = combined.sources_from_config(config.data, data_dir)
    store = pack.pack_sources(union, tmp_path / "packed" / "train", size=SIZE, num_threads=2, progress=False)
    meta = pack.read_meta(store)
    assert [(s["name"], s["count"]) for s in meta["sources"]] == [("kaggle", 101), ("hpav18", 9)]
    dataset = load_dataset(config)
    rows = np.arange(len(dataset.train_ids))
    decoded = dataset.train_source(rows, config.data)
    config.data.packed = str(tmp_path / "packed")
    packed = dataset.train_source(rows, config.data)
    assert isinstance(packed, pipeline.PackedSource)
    for i in rows:
        np.testing.assert_array_equal(packed[i]["image"], decoded[i]["image"])


def test_command_lines_take_the_same_list(data_dir, tmp_path):
    flags = ["--sources=kaggle=png:train:train.csv", "--sources=hpav18=jpg:hpav18:HPAv18RBGY_wodpl.csv"]

    def run(module, *args):
        return subprocess.run([sys.executable, "-m", module, f"--data_dir={data_dir}", *flags, *args],
                              capture_output=True, text=True, cwd=REPO, timeout=300)

    checked = run("hpa_jax.data.check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 101 images" in checked.stdout and "checked 9 images" in checked.stdout
    assert "the sources' images differ in size" in checked.stdout

    measured = run("hpa_jax.data.stats", f"--size={SIZE}")
    assert measured.returncode == 0, measured.stderr
    images = [sources.read_sample(data_dir / "train", i, size=SIZE) for i in pd.read_csv(data_dir / "train.csv")["Id"]]
    images += [sources.read_sample(data_dir / "hpav18", i, fmt="jpg", size=SIZE)
               for i in pd.read_csv(data_dir / "HPAv18RBGY_wodpl.csv")["Id"]]
    mean, std = stats.channel_stats(images)
    assert stats.config_lines(mean, std) in measured.stdout

    packed = run("hpa_jax.data.pack", f"--out={tmp_path / 'store'}", f"--size={SIZE}", "--num_threads=2")
    assert packed.returncode == 0, packed.stderr
    assert "from kaggle (101) + hpav18 (9)" in packed.stdout
    assert json.loads((tmp_path / "store" / "meta.json").read_text())["count"] == 110

    # An Id in two sources: one line naming both label files, nothing packed.
    pd.concat([pd.read_csv(data_dir / "HPAv18RBGY_wodpl.csv"), pd.read_csv(data_dir / "train.csv").head(1)]) \
        .to_csv(data_dir / "HPAv18RBGY_wodpl.csv", index=False)
    failed = run("hpa_jax.data.pack", f"--out={tmp_path / 'store2'}", f"--size={SIZE}")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().count("\n") == 0 and "is also in" in failed.stderr and "train.csv" in failed.stderr
    assert not (tmp_path / "store2").exists()
    assert run("hpa_jax.data.check").returncode == 1


def test_bad_source_lists_are_one_line_config_errors(data_dir, tmp_path):
    config = paper_config(data_dir, tmp_path)
    for bad, expected in [(("kaggle",), "is not NAME=FORMAT:IMAGES"), (("k=bmp:train",), "unknown format 'bmp'"),
                          (("a b=png:train",), "may hold only"),
                          (("k=png:train", "k=jpg:hpav18"), "more than one source")]:
        config.data.sources = bad
        with pytest.raises(ConfigError, match=expected):
            load_dataset(config)
    config.data.sources = default.TRAINING_SETS["kaggle+hpav18"]
    config.data.image_size = 0
    with pytest.raises(ConfigError, match="set data.image_size"):
        load_dataset(config)
    assert combined.parse_source("x=png:/a/imgs").csv.name == "imgs.csv"
    config.data.image_size = SIZE
    (data_dir / "HPAv18RBGY_wodpl.csv").unlink()
    with pytest.raises(DataError, match="HPAv18RBGY_wodpl.csv"):
        load_dataset(config)


def test_one_source_is_the_kaggle_layout_as_before(data_dir, tmp_path):
    config = paper_config(data_dir, tmp_path)
    config.data.sources = ()
    dataset = load_dataset(config)
    assert list(dataset.train_source_names) == ["kaggle"] * 101
    assert isinstance(dataset.train_source(np.arange(3), config.data), pipeline.ImageSource)
    frame = kaggle.read_labels_csv(data_dir / "train.csv")
    assert list(dataset.train_ids) == list(frame["Id"])


def test_training_on_the_papers_setup_is_one_config_argument(data_dir, tmp_path):
    """`--config=configs/resnet50.py:kaggle+hpav18` on a data dir in the documented layout trains
    on both sources (shrunk here to a width-8 ResNet18 on 48 px images, one epoch), drops the
    planted duplicate, writes each row's source to folds.csv and predicts the Kaggle test folder."""
    (data_dir / "test").mkdir()
    test_ids = list(pd.read_csv(data_dir / "train.csv")["Id"][:3])
    for image_id in test_ids:
        for color in ("red", "green", "blue", "yellow"):
            os.symlink(data_dir / "train" / f"{image_id}_{color}.png", data_dir / "test" / f"{image_id}_{color}.png")
    pd.DataFrame({"Id": test_ids, "Predicted": "0"}).to_csv(data_dir / "sample_submission.csv", index=False)
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "hpa_jax.main", "--config=configs/resnet50.py:kaggle+hpav18", f"--workdir={workdir}",
         f"--config.data.dir={data_dir}", "--mode=train,predict", "--config.model.name=resnet18",
         "--config.model.width=8", "--config.model.head.layers=((16, 0.0),)", f"--config.data.image_size={SIZE}",
         f"--config.data.crop_size={SIZE}", "--config.train.batch_size=32", "--config.eval.batch_size=32",
         "--config.train.num_epochs=1", "--config.data.num_threads=2", "--config.data.num_folds=3",
         f"--config.data.duplicate_cache={tmp_path / 'cache'}"],
        capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "HPA_JAX_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    folds = pd.read_csv(workdir / "folds.csv", dtype=str)
    assert list(folds.columns) == ["Id", "fold", "source"]
    assert folds["source"].value_counts().to_dict() == {"kaggle": 101, "hpav18": 8}
    assert PLANTED not in set(folds["Id"])
    assert "hpav18: 1 dropped" in result.stdout
    assert json.loads((workdir / "config.json").read_text())["data"]["sources"][1].startswith("hpav18=jpg:")
    submission = pd.read_csv(workdir / "submission.csv", dtype=str, keep_default_na=False)
    assert submission["Id"].tolist() == test_ids
