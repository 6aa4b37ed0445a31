"""The synthetic HPA generator: Kaggle layout, determinism, caching, label-tied patterns, label prior.

Pattern checks use masks built only from the reference channels of the rendered image (blue
nucleus, red+yellow cell body), or, where the reference channels cannot show it (which cell
touches which), from the field's cell ownership map; never from the pattern code itself, so
they fail if a class's green pattern lands in the wrong place.
"""

import json
import os
import pathlib
import uuid

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_jax.classes import CHANNELS, KAGGLE_TRAIN_COUNTS
from hpa_jax.data import synthetic

SIZE = 64
SUPPORTED = set(synthetic.SUPPORTED_CLASSES)


def _read_csv(path: pathlib.Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _files(root: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("synthetic")
    return synthetic.generate(root, num_train=40, num_test=10, image_size=SIZE, seed=3)


# ----------------------------------------------------------------------------- layout

def test_kaggle_layout(dataset):
    train = _read_csv(dataset / "train.csv")
    submission = _read_csv(dataset / "sample_submission.csv")
    test = _read_csv(dataset / "test_labels.csv")
    assert list(train.columns) == ["Id", "Target"] and len(train) == 40
    assert list(submission.columns) == ["Id", "Predicted"] and (submission["Predicted"] == "0").all()
    assert list(test.columns) == ["Id", "Target"] and list(test["Id"]) == list(submission["Id"])
    assert train["Id"].is_unique and test["Id"].is_unique
    assert not set(train["Id"]) & set(test["Id"])
    for split, ids in (("train", train["Id"]), ("test", test["Id"])):
        assert len(os.listdir(dataset / split)) == 4 * len(ids)
        for image_id in ids:
            assert str(uuid.UUID(image_id)) == image_id          # Kaggle-shaped id
            for color in CHANNELS:
                with Image.open(dataset / split / f"{image_id}_{color}.png") as im:
                    assert im.mode == "L" and im.size == (SIZE, SIZE)
                    assert np.asarray(im).dtype == np.uint8
    targets = [[int(v) for v in t.split(" ")] for t in list(train["Target"]) + list(test["Target"])]
    assert all(t and len(set(t)) == len(t) and set(t) <= SUPPORTED for t in targets)
    assert any(t != sorted(t) for t in targets), "Targets are written unsorted, as in the Kaggle train.csv"


def test_images_look_like_fluorescence(dataset):
    """Dark background, bright blue nuclei, dimmer green, all four channels carry signal."""
    train = _read_csv(dataset / "train.csv")
    img = np.stack([np.asarray(Image.open(dataset / "train" / f"{train['Id'][0]}_{c}.png")) for c in CHANNELS], -1)
    assert np.median(img) < 30
    assert all(np.percentile(img[..., CHANNELS.index(c)], 99) > 60 for c in ("red", "blue", "yellow"))
    assert np.percentile(img[..., 1], 99.8) > 40     # sparse classes (a few tiny dots) fill < 1% of the field


# ----------------------------------------------------------------------------- determinism

def test_generate_is_deterministic(dataset, tmp_path):
    again = synthetic.generate(tmp_path / "again", num_train=40, num_test=10, image_size=SIZE, seed=3)
    assert _files(again) == _files(dataset)


def test_images_depend_only_on_seed_split_and_index(dataset, tmp_path):
    """A smaller dataset with the same seed holds exactly the first images of the larger one."""
    small = _files(synthetic.generate(tmp_path, num_train=3, num_test=2, image_size=SIZE, seed=3))
    big = _files(dataset)
    pngs = [name for name in small if name.endswith(".png")]
    assert len(pngs) == 4 * 5 and all(small[name] == big[name] for name in pngs)


def test_different_seed_differs(dataset, tmp_path):
    other = synthetic.generate(tmp_path, num_train=40, num_test=10, image_size=SIZE, seed=4)
    assert not set(_read_csv(other / "train.csv")["Id"]) & set(_read_csv(dataset / "train.csv")["Id"])
    def first_blue(root):
        return np.asarray(Image.open(sorted((root / "train").glob("*_blue.png"))[0]))

    assert not np.array_equal(first_blue(other), first_blue(dataset))


# ----------------------------------------------------------------------------- cache

def test_ensure_synthetic_reuses_complete_and_regenerates_partial(tmp_path, capsys):
    kwargs = dict(num_train=4, num_test=2, image_size=SIZE, seed=1)
    root = synthetic.ensure_synthetic(tmp_path, **kwargs)
    assert root == tmp_path / "synthetic-v2-n4-t2-px64-seed1"
    assert json.loads((root / "COMPLETE").read_text()) == {"version": "synthetic-v2", **kwargs}
    assert len(_read_csv(root / "train.csv")) == 4
    assert "generated" in capsys.readouterr().out

    (root / "sentinel").write_text("kept only if the folder is reused")
    assert synthetic.ensure_synthetic(tmp_path, **kwargs) == root
    assert (root / "sentinel").exists()
    assert "reusing" in capsys.readouterr().out

    (root / "COMPLETE").unlink()            # e.g. a folder left by something other than ensure_synthetic
    (root / "train.csv").unlink()
    synthetic.ensure_synthetic(tmp_path, **kwargs)
    assert not (root / "sentinel").exists() and (root / "train.csv").is_file() and (root / "COMPLETE").is_file()
    assert "generated" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [root.name], "no temporary folders left behind"


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    def interrupted(out_dir, **kwargs):
        (pathlib.Path(out_dir) / "train").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic(tmp_path, num_train=4, num_test=2, image_size=SIZE, seed=1)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- patterns

def _box(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (edge padded), via an integral image."""
    k = 2 * r + 1
    c = np.pad(np.pad(a.astype(float), r, mode="edge").cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / k ** 2


def _grow(mask, r):
    return _box(mask, r) > 0


def _shrink(mask, r):
    return _box(mask, r) > 1 - 1e-9


def _regions(img: np.ndarray) -> dict[str, np.ndarray]:
    """Compartments from the reference channels alone (blue nucleus, red + yellow cell body)."""
    red, blue, yellow = (img[..., CHANNELS.index(c)].astype(float) for c in ("red", "blue", "yellow"))
    nucleus = _box(blue, 2) > 30
    cell = (_box(red + yellow, 2) > 35) | nucleus
    return {
        "nucleus": nucleus,
        "nuclear rim": _grow(nucleus, 2) & ~_shrink(nucleus, 2),
        "perinuclear": _grow(nucleus, 5) & ~nucleus,
        "cytoplasm": cell & ~_grow(nucleus, 1),
        "cell edge": _grow(cell, 2) & ~_shrink(cell, 2),
        "background": ~_grow(cell, 3),
    }


def _stats(label: int, seeds=range(4), size=96) -> dict[str, float]:
    """Where one class's green signal lies, averaged over a few fields of the same seeds."""
    out: dict[str, list[float]] = {}
    for seed in seeds:
        img = synthetic.render_field([label], size, np.random.default_rng(seed))
        regions = _regions(img)
        green = img[..., 1].astype(float)
        green -= np.median(green[regions["background"]])
        signal = np.where(green > 12, green, 0)                 # clear signal, not camera noise
        for name in ("nucleus", "nuclear rim", "cytoplasm", "cell edge"):
            out.setdefault(name, []).append(signal[regions[name]].sum() / signal.sum())
        outside = ~regions["nucleus"]
        if signal[outside].sum() > 0:
            out.setdefault("perinuclear", []).append(signal[regions["perinuclear"]].sum() / signal[outside].sum())
        nucleus, hot = regions["nucleus"], regions["nucleus"] & (signal > 0)
        if hot.any():
            blue = img[..., 2].astype(float)
            out.setdefault("blue under green", []).append(blue[hot].mean() / blue[nucleus].mean())
        cyto = regions["cytoplasm"]
        detail = lambda a: (a - _box(a, 3))[cyto]               # noqa: E731  - fine structure only
        for name in ("red", "yellow"):
            reference = img[..., CHANNELS.index(name)].astype(float)
            out.setdefault(f"corr {name}", []).append(np.corrcoef(detail(green), detail(reference))[0, 1])
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def stats():
    return {c: _stats(c) for c in SUPPORTED}


def test_same_rng_gives_same_cells_whatever_the_labels():
    a = synthetic.render_field([0], 96, np.random.default_rng(7))
    b = synthetic.render_field([25, 14, 22, 8], 96, np.random.default_rng(7))
    assert a.shape == (96, 96, 4) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[..., [0, 2, 3]], b[..., [0, 2, 3]])
    assert not np.array_equal(a[..., 1], b[..., 1])


@pytest.mark.parametrize("label", [0, 2, 3, 4, 5])
def test_nuclear_classes_are_in_the_nucleus(stats, label):
    assert stats[label]["nucleus"] > 0.9


@pytest.mark.parametrize("label", sorted(SUPPORTED - {0, 1, 2, 3, 4, 5, 16, 17, 22}))
def test_cytoplasmic_classes_are_outside_the_nucleus(stats, label):
    assert stats[label]["nucleus"] < 0.35 and stats[label]["cytoplasm"] > 0.3


def test_all_28_classes_are_supported():
    assert synthetic.SUPPORTED_CLASSES == tuple(range(28))


@pytest.mark.parametrize("label", [8, 20])
def test_peroxisomes_and_lipid_droplets_avoid_the_nucleus(stats, label):
    assert stats[label]["nucleus"] < 0.1 and stats[label]["cytoplasm"] > 0.7


def _field(seed: int, size: int):
    """The geometry render_field draws for default_rng(seed) (its first child stream)."""
    return synthetic._Field(size, np.random.default_rng(seed).spawn(3)[0])


def _contacts(field, r: int = 2) -> np.ndarray:
    """Pixels within r of a pixel of another cell (both inside their cells): where cells touch."""
    inside = field.cell_mask > 0.5
    own = np.where(inside, field.owner, -1)
    near = np.zeros_like(inside)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            other = np.roll(own, (dy, dx), (0, 1))
            near |= (other >= 0) & (other != own)
    return near & inside


def test_cell_junctions_sit_where_cells_touch_unlike_plasma_membrane():
    share = {21: [], 22: []}
    for seed in range(6):
        contact = _contacts(_field(seed, 96))
        if contact.sum() < 20:
            continue
        for label in share:
            g = synthetic.render_field([label], 96, np.random.default_rng(seed))[..., 1].astype(float)
            g = np.clip(g - np.median(g) - 12, 0, None)
            if g.sum() > 0:
                share[label].append(g[contact].sum() / g.sum())
    assert len(share[22]) >= 3 and len(share[21]) >= 3
    assert np.mean(share[22]) > 0.8 and np.mean(share[21]) < 0.5


def test_mitotic_spindle_condenses_the_nucleus():
    """Class 17 turns cells mitotic: a brighter, smaller chromatin plate in blue; spindle green."""
    for seed in range(3):
        a = synthetic.render_field([0], 128, np.random.default_rng(seed))
        b = synthetic.render_field([17], 128, np.random.default_rng(seed))
        blue_a, blue_b = a[..., 2].astype(float), b[..., 2].astype(float)
        assert (blue_b > 30).sum() < (blue_a > 30).sum()             # condensed: less nuclear area
        assert np.percentile(blue_b, 99.9) > np.percentile(blue_a, 99.9) or blue_b.max() == 255
        g = b[..., 1].astype(float)
        hot = g > np.median(g) + 25
        assert hot.sum() > 20
        changed = _box(np.abs(blue_a - blue_b), 6) > 1                # green sits at the mitotic cell(s)
        assert (hot & changed).sum() / hot.sum() > 0.8


def test_cytokinetic_bridge_spans_two_touching_cells():
    hits = 0
    for seed in range(4):
        f = _field(seed, 128)
        g = synthetic.render_field([16], 128, np.random.default_rng(seed))[..., 1].astype(float)
        hot = g > np.median(g) + 30
        if not hot.any():
            continue
        hits += 1
        assert (hot & _contacts(f, 7)).sum() / hot.sum() > 0.8
    assert hits >= 3


def test_microtubule_ends_lie_towards_the_cell_edge(stats):
    assert stats[15]["corr red"] > 0.2
    assert stats[15]["cell edge"] > max(stats[25]["cell edge"], stats[14]["cell edge"]) + 0.1


def test_nucleoplasm_vs_cytosol(stats):
    assert stats[0]["nucleus"] > 0.9 and stats[0]["cytoplasm"] < 0.05
    assert stats[25]["cytoplasm"] > 0.6 and stats[25]["nucleus"] < 0.25


def test_nuclear_membrane_is_a_rim(stats):
    assert stats[1]["nuclear rim"] > 0.8 and stats[0]["nuclear rim"] < 0.45


def test_nucleoli_sit_in_the_dark_holes_of_the_nucleus(stats):
    for label in (2, 3):
        assert stats[label]["blue under green"] < 0.95
    for label in (0, 4, 5):
        assert stats[label]["blue under green"] > 1.05


def test_plasma_membrane_outlines_the_cell(stats):
    assert stats[21]["cell edge"] > 0.7 and stats[25]["cell edge"] < 0.3


def test_microtubules_follow_red_and_er_follows_yellow(stats):
    assert stats[14]["corr red"] > 0.7 and stats[14]["corr yellow"] < 0.3
    assert stats[6]["corr yellow"] > 0.7 and stats[6]["corr red"] < 0.4


@pytest.mark.parametrize("label", [7, 18, 19, 24])
def test_juxtanuclear_classes_hug_the_nucleus(stats, label):
    """Golgi, centrosome and aggresome sit right next to the nucleus, unlike diffuse cytosol."""
    assert stats[label]["perinuclear"] > 0.95 > stats[25]["perinuclear"] + 0.1


@pytest.mark.parametrize("label", [9, 10])
def test_endosomes_and_lysosomes_lean_to_the_nucleus(stats, label):
    assert stats[label]["perinuclear"] > stats[25]["perinuclear"] + 0.1
    assert stats[label]["cell edge"] < stats[25]["cell edge"]


def test_unknown_class_is_rejected():
    with pytest.raises(ValueError, match="SUPPORTED_CLASSES"):
        synthetic.render_field([28], SIZE, np.random.default_rng(0))


# ----------------------------------------------------------------------------- labels

REAL_LABELS_PER_IMAGE = np.array([15126, 12485, 3160, 299 + 2]) / 31072   # Kaggle train.csv, 5 -> 4


def _inclusion(p: np.ndarray, k: int) -> np.ndarray:
    """Exact P(class in set) when k classes are drawn one by one without replacement, each with
    probability proportional to p among those not yet drawn (enumerates all ordered draws)."""
    n = p.size
    seq, used = p.copy(), p.copy()       # probability and total weight of each ordered prefix
    for depth in range(1, k):
        nxt = seq[..., None] * p / (1 - used[..., None])
        for d in range(depth):           # a class cannot be drawn twice
            prev = np.arange(n).reshape([n if i == d else 1 for i in range(depth)] + [1])
            nxt = np.where(prev == np.arange(n), 0, nxt)
        seq, used = nxt, used[..., None] + p
    return sum(seq.sum(axis=tuple(i for i in range(k) if i != d)) for d in range(k))


def test_sample_labels_follow_the_stated_rule():
    """Rule: k ~ Kaggle labels-per-image, then k classes weighted by sqrt(max(Kaggle count, 150))."""
    counts = np.maximum(np.asarray(KAGGLE_TRAIN_COUNTS, float), 150)
    p = np.sqrt(counts) / np.sqrt(counts).sum()
    expected = sum(w * _inclusion(p, k) for k, w in enumerate(REAL_LABELS_PER_IMAGE, 1))
    assert expected.min() > 0.015 and expected.argmax() == 0

    rng, n = np.random.default_rng(0), 5000
    draws = [synthetic.sample_labels(rng) for _ in range(n)]
    assert all(d == sorted(set(d)) and set(d) <= SUPPORTED for d in draws)
    freq = np.bincount([c for d in draws for c in d], minlength=28) / n
    tolerance = 4 * np.sqrt(expected * (1 - expected) / n) + 0.002     # ~4 binomial sigma
    assert np.all(np.abs(freq - expected) < tolerance), np.round(np.c_[freq, expected], 3)
    assert freq.min() > 0.015
    per_image = np.bincount([len(d) for d in draws], minlength=5)[1:] / n
    np.testing.assert_allclose(per_image, REAL_LABELS_PER_IMAGE, atol=0.02)
