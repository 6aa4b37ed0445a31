"""`python -m hpa_jax.predict` on a folder of one's own images: the same probabilities as
`--mode=predict` on the same images in the Kaggle layout, tiles averaged, bad images named in
one line, embeddings of the encoder's width."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from conftest import SHARED_DATA

from hpa_jax.folder import predict as folder_predict
from hpa_jax.evaluation import modes
from hpa_jax.classes import CHANNELS, CLASS_NAMES
from hpa_jax.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_IDS = ("000a9596-bbc4-11e8-b2bc-ac1f6b6435d0", "001bcdd2-bbb2-11e8-b2ba-ac1f6b6435d0",
           "027a702a-bbca-11e8-b2bc-ac1f6b6435d0")
TIF_IDS = ("02b13740-bbc5-11e8-b2bc-ac1f6b6435d0",)
JPG_IDS = ("10580_1610_C1_1", "10814_50_A1_1")     # 2048 and 1728 px HPAv18 JPEGs


def copy_png(src: pathlib.Path, image_id: str, dest: pathlib.Path) -> None:
    for color in CHANNELS:
        (dest / f"{image_id}_{color}.png").write_bytes((src / f"{image_id}_{color}.png").read_bytes())


def write_2048_tif(src: pathlib.Path, image_id: str, dest: pathlib.Path) -> None:
    """A full-size 16-bit TIFF per channel, made from the 512 px PNG (as x * 257 after a 4x upscale)."""
    for color in CHANNELS:
        plane = np.asarray(Image.open(src / f"{image_id}_{color}.png").resize((2048, 2048), Image.Resampling.BILINEAR))
        tifffile.imwrite(dest / f"{image_id}_{color}.tif", plane.astype(np.uint16) * 257)


@pytest.fixture(scope="module")
def real_folders(tmp_path_factory):
    """One folder mixing the real samples (3 Kaggle PNGs, a full-size TIFF, 2 HPAv18 JPEGs of 2048
    and 1728 px), and the same images as three Kaggle-layout datasets, one per format."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real HPA sample data not found at {SHARED_DATA} (../shared/data beside the repo)")
    shared_data = SHARED_DATA
    root = tmp_path_factory.mktemp("real")
    mixed = root / "mixed"
    mixed.mkdir()
    layouts = {fmt: root / f"kaggle_{fmt}" for fmt in ("png", "tif", "jpg")}
    for fmt, ids in (("png", PNG_IDS), ("tif", TIF_IDS), ("jpg", JPG_IDS)):
        test = layouts[fmt] / "test"
        test.mkdir(parents=True)
        for folder in (mixed, test):
            if fmt == "png":
                for image_id in ids:
                    copy_png(shared_data / "hpa_kaggle_sample" / "train", image_id, folder)
            elif fmt == "tif":
                for image_id in ids:
                    write_2048_tif(shared_data / "hpa_kaggle_sample" / "train", image_id, folder)
            else:
                for image_id in ids:
                    for color in CHANNELS:
                        name = f"{image_id}_{color}.jpg"
                        (folder / name).write_bytes((shared_data / "hpav18_sample" / "raw_jpg" / name).read_bytes())
        # --mode=predict needs a train.csv (its rows are not read here) and the test Ids' list.
        (layouts[fmt] / "train.csv").write_text("Id,Target\n" + "".join(f"t{i},0\n" for i in range(8)))
        (layouts[fmt] / "sample_submission.csv").write_text("Id,Predicted\n" + "".join(f"{i},0\n" for i in ids))
    return mixed, layouts


def mode_predict_probs(run: pathlib.Path, data_dir: pathlib.Path, fmt: str) -> dict:
    """{Id: probabilities} from `--mode=predict` (modes.predict) on a Kaggle-layout dataset."""
    config = folder_predict.run_config(run)
    config.data.source, config.data.dir, config.data.format = "kaggle", str(data_dir), fmt
    modes.predict(config, run)
    saved = np.load(run / "test_probs.npz")
    return dict(zip(saved["ids"], saved["probs"]))


def test_folder_predictions_equal_mode_predict_on_the_kaggle_layout(tiny_run, real_folders, tmp_path):
    mixed, layouts = real_folders
    result = folder_predict.predict_folder(tiny_run, mixed, tmp_path / "out", embeddings=True, progress=False)
    expected = {}
    for fmt, data_dir in layouts.items():
        expected |= mode_predict_probs(tiny_run, data_dir, fmt)
    ids = sorted(PNG_IDS + TIF_IDS + JPG_IDS)
    assert result["ids"] == ids and result["size"] == 32
    np.testing.assert_allclose(result["probs"], np.stack([expected[i] for i in ids]), rtol=1e-5, atol=1e-6)

    frame = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"Predicted": str}, keep_default_na=False)
    assert list(frame.columns) == ["Id", "Predicted_names", "Predicted", *CLASS_NAMES]
    assert frame["Id"].tolist() == ids
    np.testing.assert_allclose(frame[list(CLASS_NAMES)].to_numpy(), result["probs"], atol=1e-6)
    # The run has no thresholds.json: its eval.threshold (0.5) decides, names and indices agree.
    for row, probs in zip(frame.itertuples(), result["probs"]):
        indices = [int(t) for t in row.Predicted.split()]
        assert indices == np.flatnonzero(probs > 0.5).tolist()
        assert row.Predicted_names == "; ".join(CLASS_NAMES[c] for c in indices)

    # Embeddings: one row per image, the encoder's feature width (8 * 8: ResNet18's last stage).
    saved = np.load(tmp_path / "out" / "embeddings.npz")
    assert saved["ids"].tolist() == ids and saved["features"].shape == (len(ids), 64)
    assert (tmp_path / "out" / "embeddings_pca.png").stat().st_size > 0


def test_thresholds_json_of_the_run_decides(tiny_run, real_folders, tmp_path):
    """With a thresholds.json in the run (as --mode=cv writes), its per-class thresholds are used."""
    mixed, _ = real_folders
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("tensorboard"))
    first = folder_predict.predict_folder(run, mixed, tmp_path / "a", progress=False)
    thresholds = np.full(28, 0.99, np.float32)
    thresholds[3] = 0.0                                       # class 3 always on, the rest never
    (run / "thresholds.json").write_text('{"thresholds": [' + ", ".join(map(str, thresholds.tolist())) + "]}")
    second = folder_predict.predict_folder(run, mixed, tmp_path / "b", progress=False)
    np.testing.assert_array_equal(first["probs"], second["probs"])
    assert (second["preds"] == (second["probs"] > thresholds)).all() and second["preds"][:, 3].all()


def test_tiles_are_averaged(tiny_run, shared_data, tmp_path):
    """--fit=tile on a 64 px image with a 32 px run gives the mean of its four 32 px quadrants
    predicted as images of their own."""
    whole, quarters = tmp_path / "whole", tmp_path / "quarters"
    whole.mkdir(), quarters.mkdir()
    source = shared_data / "hpa_kaggle_sample" / "train"
    for color in CHANNELS:
        plane = Image.open(source / f"{PNG_IDS[1]}_{color}.png").resize((64, 64), Image.Resampling.LANCZOS)
        plane.save(whole / f"field_{color}.png")
        for q, (top, left) in enumerate(((0, 0), (0, 32), (32, 0), (32, 32))):
            plane.crop((left, top, left + 32, top + 32)).save(quarters / f"q{q}_{color}.png")
    tiled = folder_predict.predict_folder(tiny_run, whole, tmp_path / "a", fit="tile", progress=False)
    parts = folder_predict.predict_folder(tiny_run, quarters, tmp_path / "b", progress=False)
    np.testing.assert_allclose(tiled["probs"][0], parts["probs"].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_bad_images_are_one_line_and_nothing_is_written(tiny_run, shared_data, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    source = shared_data / "hpa_kaggle_sample" / "train"
    for image_id in PNG_IDS:
        copy_png(source, image_id, images)
    (images / f"{PNG_IDS[0]}_blue.png").unlink()                          # missing channel
    (images / f"{PNG_IDS[2]}_green.png").write_bytes(b"not a png")        # unreadable channel
    result = subprocess.run([sys.executable, "-m", "hpa_jax.predict", f"--workdir={tiny_run}", f"--images={images}",
                             f"--out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()     # the last one; before it only the progress bar's
    assert lines[-1].startswith("hpa_jax.predict: error: ") and sum("error" in line for line in lines) == 1
    assert (f"2 image(s) with a missing or unreadable channel: {PNG_IDS[0]} (no blue channel file); "
            f"{PNG_IDS[2]} ({PNG_IDS[2]}_green.png: cannot decode PNG") in lines[-1]
    assert not (tmp_path / "out").exists()

    # An image that turns unreadable only while predicting: the same line, and nothing written.
    (images / f"{PNG_IDS[0]}_blue.png").write_bytes((source / f"{PNG_IDS[0]}_blue.png").read_bytes())
    with pytest.raises(DataError) as error:
        folder_predict.predict_folder(tiny_run, images, tmp_path / "out", cams=True, cam_shifts=1, progress=False)
    message = str(error.value)
    assert "\n" not in message and f"1 image(s) with a missing or unreadable channel: {PNG_IDS[2]} (" in message
    assert list((tmp_path / "out").iterdir()) == []
    (images / f"{PNG_IDS[0]}_blue.png").unlink()

    # --skip_bad predicts the good one and lists the others.
    result = folder_predict.predict_folder(tiny_run, images, tmp_path / "out", skip_bad=True, progress=False)
    assert result["ids"] == [PNG_IDS[1]]
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped["Id"].tolist() == [PNG_IDS[0], PNG_IDS[2]]
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["Id"].tolist() == [PNG_IDS[1]]
