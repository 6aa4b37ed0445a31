"""Near-duplicate detection: the green-channel pHash, grouping by Hamming distance, the policies."""

import functools
import io
import itertools
import pathlib

import numpy as np
import pandas as pd
import pytest
import scipy.fftpack
from PIL import Image

from hpa_jax.data import duplicates
from hpa_jax.data.kaggle import open_png_plane
from hpa_jax.errors import ConfigError, DataError


@functools.cache
def _real(root: pathlib.Path) -> tuple[list[str], np.ndarray]:
    """The 101 Kaggle sample Ids and their green-channel hashes."""
    ids = pd.read_csv(root / "hpa_kaggle_sample" / "train.csv", dtype=str)["Id"].tolist()
    return ids, duplicates.hash_images(root / "hpa_kaggle_sample" / "train", ids, num_threads=2, progress=False)


def _green(root: pathlib.Path, image_id: str) -> np.ndarray:
    return open_png_plane(root / "hpa_kaggle_sample" / "train" / f"{image_id}_green.png", "green")


def _clip(x) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _brute_groups(hashes, max_distance):
    """Union-find over all pairs, the definition group_duplicates must match."""
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in itertools.combinations(range(len(hashes)), 2):
        if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= max_distance:
            parent[find(j)] = find(i)
    roots = [find(i) for i in range(len(hashes))]
    numbering = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots])


def test_dct_matrix_is_scipy_dct():
    x = np.random.default_rng(0).normal(size=(32, 5))
    np.testing.assert_allclose(duplicates.dct_matrix(32) @ x, scipy.fftpack.dct(x, axis=0), atol=1e-9)


def test_quantized_phash_is_imagehash_phash():
    """quantize=True is imagehash.phash's algorithm (written out here with scipy), bit for bit."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        plane = _clip(rng.gamma(1.0, 20.0, size=(96, 80)))
        pixels = np.asarray(Image.fromarray(plane).convert("L").resize((32, 32), Image.Resampling.LANCZOS))
        low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
        bits = "".join("1" if b else "0" for b in (low > np.median(low)).ravel())
        assert duplicates.hash_to_hex(duplicates.phash(plane, quantize=True)) == f"{int(bits, 2):016x}"


def test_flat_plane_has_one_hash():
    assert duplicates.phash(np.full((64, 64), 7, np.uint8)) == duplicates.phash(np.full((64, 64), 200, np.uint8))


def test_planted_copies_of_real_images_are_grouped(shared_data, tmp_path):
    """Each real image and its lightly noised, brightness-shifted, JPEG and half-resolution copies
    form one group; the distinct real images stay apart."""
    ids = _real(shared_data)[0][:6]
    rng = np.random.default_rng(0)
    copies = {
        "noise": lambda p: _clip(p + rng.normal(0, 3, p.shape)),
        "brighter": lambda p: _clip(p.astype(np.float64) + 10),
        "jpeg": lambda p: np.asarray(Image.open(_jpeg(p))),
        "halfres": lambda p: np.asarray(Image.fromarray(p).resize((256, 256), Image.Resampling.BILINEAR)),
    }
    names, origin = [], []
    for n, image_id in enumerate(ids):
        plane = _green(shared_data, image_id)
        for kind, make in [("orig", lambda p: p), *copies.items()]:
            name = f"{image_id}-{kind}"
            Image.fromarray(make(plane)).save(tmp_path / f"{name}_green.png")
            names.append(name)
            origin.append(n)
    hashes = duplicates.hash_images(tmp_path, names, num_threads=2, progress=False)
    origin = np.array(origin)
    same = origin[:, None] == origin[None, :]
    dist = duplicates.hamming(hashes[:, None], hashes[None, :])
    assert dist[same].max() <= 4, dist[same].max()                # copies: a few bits at most
    assert dist[~same].min() > duplicates.DEFAULT_MAX_DISTANCE    # distinct images: far
    groups = duplicates.group_duplicates(hashes, duplicates.DEFAULT_MAX_DISTANCE)
    np.testing.assert_array_equal(groups, origin)

    rows, fold_groups, summary = duplicates.apply_policy(groups, "drop", duplicates.DEFAULT_MAX_DISTANCE)
    assert [names[r] for r in rows] == [f"{i}-orig" for i in ids]   # the first of each group in file order
    assert fold_groups is None
    assert (summary.num_groups, summary.images_in_groups, summary.images_dropped) == (6, 30, 24)
    rows, fold_groups, summary = duplicates.apply_policy(groups, "same_fold", duplicates.DEFAULT_MAX_DISTANCE)
    np.testing.assert_array_equal(rows, np.arange(30))
    np.testing.assert_array_equal(fold_groups, groups)
    assert summary.images_dropped == 0 and "6 groups of 30 images" in str(summary)


def _jpeg(plane) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(plane).save(buffer, "JPEG", quality=75)
    buffer.seek(0)
    return buffer


def test_real_sample_has_no_duplicates(shared_data):
    """The 101 distinct Kaggle images: all 5050 pairs are far apart (14 bits at the closest,
    a median of 30 of 64), so nothing is grouped at any distance up to 10."""
    ids, hashes = _real(shared_data)
    histogram = duplicates.pair_distance_histogram(hashes)
    assert histogram.sum() == len(ids) * (len(ids) - 1) // 2
    assert histogram[:14].sum() == 0
    assert 28 <= np.searchsorted(np.cumsum(histogram), histogram.sum() / 2) <= 32
    for distance in range(11):
        groups = duplicates.group_duplicates(hashes, distance)
        np.testing.assert_array_equal(groups, np.arange(len(ids)))
    # At 14 bits the two closest pairs join, as the brute-force closure says.
    np.testing.assert_array_equal(duplicates.group_duplicates(hashes, 14), _brute_groups(hashes, 14))


@pytest.mark.parametrize("max_distance", [0, 1, 3, 8])
def test_grouping_is_the_transitive_closure(max_distance):
    """Blocks of rows (a block smaller than the clusters) give the brute-force union-find groups."""
    rng = np.random.default_rng(max_distance)
    centres = rng.integers(0, 2**63, 12, dtype=np.uint64)
    hashes = []
    for c in rng.choice(centres, 90):
        flips = rng.choice(64, rng.integers(0, 4), replace=False)
        hashes.append(c ^ np.bitwise_or.reduce(np.left_shift(np.uint64(1), flips.astype(np.uint64)), initial=np.uint64(0)))
    hashes = np.array(hashes, np.uint64)
    expected = _brute_groups(hashes, max_distance)
    for block, columns in ((1, 1 << 15), (7, 1 << 15), (256, 1 << 15), (7, 10), (5, 5)):
        np.testing.assert_array_equal(duplicates.group_duplicates(hashes, max_distance, block=block, columns=columns),
                                      expected)


def test_tiles_cover_every_pair_once_and_merges_in_parts_agree(monkeypatch):
    """Tiles of a few columns count each of the N(N-1)/2 pairs once, as the full matrix does; pairs
    merged in many small batches give the groups of one merge."""
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 60, dtype=np.uint64) & np.uint64(0xFF)    # 8 bits: many close pairs
    full = np.bitwise_count(hashes[:, None] ^ hashes[None, :])[np.triu_indices(60, k=1)]
    expected = np.bincount(full, minlength=65)
    for block, columns in ((256, 1 << 15), (7, 9), (1, 1)):
        np.testing.assert_array_equal(duplicates.pair_distance_histogram(hashes, block=block, columns=columns),
                                      expected)
    once = duplicates.group_duplicates(hashes, 2)
    monkeypatch.setattr(duplicates, "MERGE_PAIRS", 3)
    np.testing.assert_array_equal(duplicates.group_duplicates(hashes, 2, block=4, columns=8), once)
    np.testing.assert_array_equal(once, _brute_groups(hashes, 2))


def test_chain_joins_far_ends():
    a = np.uint64(0)
    b = np.uint64(0b1111)            # 4 bits from a
    c = np.uint64(0b11111111)        # 4 from b, 8 from a
    d = np.uint64(0xFFFF_0000_0000_0000)
    groups = duplicates.group_duplicates(np.array([d, a, c, b], np.uint64), 4)
    np.testing.assert_array_equal(groups, [0, 1, 1, 1])
    np.testing.assert_array_equal(duplicates.keep_first(groups), [True, True, False, False])


def test_cached_hashes_hash_each_id_once(tmp_path, monkeypatch):
    for i, value in enumerate((10, 60, 120)):
        plane = np.zeros((64, 64), np.uint8)
        plane[: 10 + 15 * i, :] = value
        Image.fromarray(plane).save(tmp_path / f"img{i}_green.png")
    calls = []
    real = duplicates.hash_images
    monkeypatch.setattr(duplicates, "hash_images", lambda folder, ids, **kw: calls.append(list(ids)) or real(
        folder, ids, **kw))
    cache = duplicates.cache_file(tmp_path / "cache", tmp_path, fmt="png")
    assert cache.parent == tmp_path / "cache" / "phash" and cache != duplicates.cache_file(tmp_path, tmp_path / "x")
    first = duplicates.cached_hashes(tmp_path, ["img0", "img1"], cache, progress=False)
    again = duplicates.cached_hashes(tmp_path, ["img1", "img2", "img0"], cache, progress=False)
    assert calls == [["img0", "img1"], ["img2"]]
    np.testing.assert_array_equal(again[[2, 0]], first)
    np.testing.assert_array_equal(again, real(tmp_path, ["img1", "img2", "img0"], progress=False))


def test_errors(tmp_path):
    with pytest.raises(DataError, match="missing green channel file"):
        duplicates.hash_images(tmp_path, ["nope"], progress=False)
    with pytest.raises(ConfigError, match="data.duplicates"):
        duplicates.apply_policy(np.zeros(3, int), "remove")
    with pytest.raises(ConfigError, match=">= 0"):
        duplicates.group_duplicates(np.zeros(3, np.uint64), -1)
