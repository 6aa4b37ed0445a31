"""`python -m hpa_jax.data.check` finds every planted problem in a copy of real Kaggle images;
`python -m hpa_jax.data.stats` equals numpy over the stacked images."""

import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hpa_jax.data import check, kaggle, sources, stats
from hpa_jax.data.kaggle import read_labels_csv
from hpa_jax.errors import DataError

REPO = pathlib.Path(__file__).resolve().parents[1]
COLORS = ("red", "green", "blue", "yellow")


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def dataset(tmp_path, shared_data):
    """data/train.csv + data/train/ with 4 real Kaggle images; returns (root, ids)."""
    src = shared_data / "hpa_kaggle_sample"
    frame = read_labels_csv(src / "train.csv")
    ids = list(frame["Id"][:4])
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    for image_id in ids:
        for color in COLORS:
            shutil.copy(src / "train" / f"{image_id}_{color}.png", root / "train")
    rows = [f"{i},{t}" for i, t in zip(frame["Id"][:4], frame["Target"][:4])]
    (root / "train.csv").write_text("Id,Target\n" + "\n".join(rows) + "\n")
    return root, ids


def kinds(problems):
    return sorted({p.kind for p in problems})


def test_clean_copy_has_no_problem(dataset):
    root, ids = dataset
    result = check.check_dataset(root, progress=False)
    assert result.problems == [] and result.num_ids == 4 and result.num_files == 16
    assert dict(result.shapes) == {(512, 512, 8): 4}
    completed = run("hpa_jax.data.check", f"--data_dir={root}")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "no problems found" in completed.stdout and "checked 4 images, 16 files" in completed.stdout


@pytest.mark.parametrize("content, kind, detail", [
    (None, kaggle.CSV_NOT_FOUND, "file not found"),
    ("", kaggle.EMPTY_CSV, "empty CSV"),
    ("Id,Target\n", kaggle.EMPTY_CSV, "no rows after the header"),
    ("Id,Label\na,1\n", kaggle.MALFORMED_CSV, "missing column(s) Target"),
    ('Id,Target\n"a,1\n', kaggle.MALFORMED_CSV, "malformed CSV"),
    ("Id,Target\na,1\nb,2,3\n", kaggle.MALFORMED_CSV, "malformed CSV"),
    ("Id,Target\na,1,2\nb,3,4\n", kaggle.MALFORMED_CSV, "more fields than the header"),
    (b"Id,Target\n\xff\xfe,1\n", kaggle.MALFORMED_CSV, "not UTF-8"),
])
def test_unusable_csv_is_one_problem(tmp_path, content, kind, detail):
    path = tmp_path / "train.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    problems = check.csv_problems(path)
    assert [p.kind for p in problems] == [kind]
    assert detail in str(problems[0]) and str(problems[0]).startswith(str(path))
    with pytest.raises(DataError, match=detail.replace("(", r"\(").replace(")", r"\)")):
        read_labels_csv(path)  # training stops at the same problem


def test_every_row_problem_is_collected(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("Id,Target\na,1\nb,\nc,1 x\nd,28 3\na,2\ne,-1\nb,4\nf,0 27\n")
    problems = check.csv_problems(path)
    assert [(p.kind, p.detail) for p in problems] == [
        (kaggle.DUPLICATE_ID, "duplicate Id 'a' (2 duplicates)"),
        (kaggle.DUPLICATE_ID, "duplicate Id 'b' (2 duplicates)"),
        (kaggle.NO_LABELS, "Id b has no labels"),
        (kaggle.BAD_TOKEN, "Id c has a Target token that is not an integer: '1 x'"),
        (kaggle.BAD_CLASS, "Id d has unknown class index 28 (expected 0..27)"),
        (kaggle.BAD_CLASS, "Id e has unknown class index -1 (expected 0..27)"),
    ]
    # read_labels_csv raises the first one, with the message it always had.
    with pytest.raises(DataError, match=r"duplicate Id 'a' \(2 duplicates\)$"):
        read_labels_csv(path)


def test_file_and_image_problems(dataset):
    root, ids = dataset
    train = root / "train"
    a, b, c, d = ids
    (train / f"{a}_green.png").unlink()                                                    # missing channel
    data = (train / f"{b}_blue.png").read_bytes()
    (train / f"{b}_blue.png").write_bytes(data[: len(data) // 2])                           # truncated
    (train / f"{b}_red.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")                      # undecodable
    Image.open(train / f"{c}_yellow.png").convert("RGB").save(train / f"{c}_yellow.png")    # not grayscale
    Image.fromarray(np.zeros((512, 512), np.uint16)).save(train / f"{c}_green.png")         # 16-bit PNG
    Image.fromarray(np.zeros((256, 512), np.uint8)).save(train / f"{d}_blue.png")           # other size
    assert kinds(sources.image_problems(train, a)) == [kaggle.MISSING_FILE]
    assert [(p.kind, pathlib.Path(p.path).name) for p in sources.image_problems(train, b)] == [
        (kaggle.UNREADABLE, f"{b}_red.png"), (kaggle.UNREADABLE, f"{b}_blue.png")]
    assert [(p.kind, pathlib.Path(p.path).name) for p in sources.image_problems(train, c)] == [
        (kaggle.WRONG_MODE, f"{c}_green.png"), (kaggle.WRONG_MODE, f"{c}_yellow.png")]
    (problem,) = sources.image_problems(train, d)
    assert problem.kind == kaggle.SIZE_MISMATCH and str(problem).endswith(
        f"{d}_blue.png: size 512x256 differs from the red channel's 512x512")

    shutil.copy(train / f"{d}_red.png", train / "stranger_red.png")                         # Id not in the CSV
    (train / "notes.png").write_bytes(b"")                                                  # not {Id}_{color}.png
    (train / "readme.txt").write_text("ignored: not an image of this format")
    problems = check.file_problems(train, ids, "png", csv_name="train.csv")
    assert [(p.kind, pathlib.Path(p.path).name, p.detail) for p in problems] == [
        (check.UNEXPECTED_NAME, "notes.png", "not named {Id}_{red,green,blue,yellow}.png"),
        (check.EXTRA_FILE, "stranger_red.png", "Id stranger is not in train.csv")]


def test_every_planted_problem_is_reported(dataset):
    root, ids = dataset
    train = root / "train"
    a, b, c, d = ids
    rows = (root / "train.csv").read_text().splitlines()
    rows[1] = rows[1].split(",")[0] + ",3 x"          # a: token not an integer
    rows[2] = rows[2].split(",")[0] + ",30"           # b: class index out of range
    rows[3] = rows[3].split(",")[0] + ","             # c: no labels
    rows.append(f"{d},0")                             # d: duplicate Id
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (train / f"{a}_yellow.png").unlink()
    data = (train / f"{b}_green.png").read_bytes()
    (train / f"{b}_green.png").write_bytes(data[: len(data) - 1000])
    Image.new("LA", (512, 512)).save(train / f"{c}_red.png")
    Image.fromarray(np.zeros((500, 512), np.uint8)).save(train / f"{d}_yellow.png")
    shutil.copy(train / f"{d}_red.png", train / "extra_red.png")

    result = check.check_dataset(root, progress=False)
    expected = {
        kaggle.BAD_TOKEN: "train.csv", kaggle.BAD_CLASS: "train.csv", kaggle.NO_LABELS: "train.csv",
        kaggle.DUPLICATE_ID: "train.csv", check.EXTRA_FILE: "extra_red.png", kaggle.MISSING_FILE: f"{a}_yellow.png",
        kaggle.UNREADABLE: f"{b}_green.png", kaggle.WRONG_MODE: f"{c}_red.png", kaggle.SIZE_MISMATCH: f"{d}_yellow.png",
    }
    assert {p.kind: pathlib.Path(p.path).name for p in result.problems} == expected
    assert len(result.problems) == len(expected)

    completed = run("hpa_jax.data.check", f"--data_dir={root}", "--max_examples=1")
    assert completed.returncode == 1, completed.stderr[-2000:]
    report = completed.stdout
    assert "9 problem(s) of 9 kind(s)" in report
    for kind, name in expected.items():
        assert f"  {kind}: 1\n" in report and name in report
    assert str(train / f"{b}_green.png") + ": cannot decode PNG" in report
    assert "checking images" in completed.stderr  # the progress bar


def test_cli_errors_are_one_line(tmp_path):
    completed = run("hpa_jax.data.check", f"--data_dir={tmp_path / 'nowhere'}")
    assert completed.returncode == 1
    assert (completed.stderr.strip().splitlines()[-1]
            == f"hpa_jax.data.check: error: {tmp_path / 'nowhere'}: --data_dir is not a folder")
    result = check.check_dataset(tmp_path, progress=False)  # no CSV, no image folder
    assert kinds(result.problems) == [kaggle.CSV_NOT_FOUND, check.MISSING_FOLDER]


def test_stats_equal_numpy(dataset):
    root, ids = dataset
    images = np.stack([kaggle.read_image(root / "train", i) for i in ids]).astype(np.float64) / 255.0
    want_mean, want_std = images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2))
    mean, std = stats.channel_stats(kaggle.read_image(root / "train", i) for i in ids)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-9)
    np.testing.assert_allclose(std, want_std, rtol=1e-9)
    folder = stats.folder_stats(root / "train", progress=False)
    assert folder.num_images == 4 and folder.num_pixels == 4 * 512 * 512
    np.testing.assert_allclose(folder.mean_std(), (want_mean, want_std), rtol=1e-9)
    assert stats.select_ids(list("abcdefghijk"), 3) == ["a", "f", "k"]

    completed = run("hpa_jax.data.stats", f"--data_dir={root}")
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert lines[-2] == "c.data.mean = (" + ", ".join(f"{v:.4f}" for v in want_mean) + ")"
    assert lines[-1] == "c.data.std = (" + ", ".join(f"{v:.4f}" for v in want_std) + ")"
    assert "reading images" in completed.stderr
