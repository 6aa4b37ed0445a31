"""The training batches: each image the step trains on is a crop of its stored image under one of
the 8 dihedral transforms (applied in the jitted step), several epochs come from one iterator
exactly as epoch by epoch, and the readers are sized to the host without grain's warning."""

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.data import pipeline
from hpa_jax.runtime import sharding
from hpa_jax.training.loop import make_train_step
from test_train_step import initial_state, tiny_config

CROP = 24


@pytest.fixture(scope="module")
def packed_source(synthetic_store):
    """A packed store of 24 synthetic 32 px fields, with random labels."""
    return synthetic_store(24)


def numpy_d4(image: np.ndarray, k: int) -> np.ndarray:
    """The reference: k quarter turns, then a left-right flip for k >= 4."""
    image = np.rot90(image, k % 4)
    return image[:, ::-1] if k >= 4 else image


def test_dihedral_on_the_device_is_numpys_rotations_and_flips():
    images = np.random.default_rng(0).integers(0, 256, (16, 5, 5, 3), dtype=np.uint8)
    codes = np.arange(16) % 8
    got = np.asarray(jax.jit(pipeline.dihedral)(jnp.asarray(images), jnp.asarray(codes, jnp.uint8)))
    for image, code, out in zip(images, codes, got):
        np.testing.assert_array_equal(out, numpy_d4(image, code))
    # the 8 transforms of an image with no symmetry are 8 different images: D4, not a subgroup
    assert len({numpy_d4(images[0], k).tobytes() for k in range(8)}) == 8


def matches(stored: np.ndarray, shown: np.ndarray) -> list[tuple[int, int, int]]:
    """Every (top, left, k) with which `shown` is the D4_k transform of a crop of `stored` (brute force)."""
    c = shown.shape[0]
    return [(top, left, k) for top in range(stored.shape[0] - c + 1) for left in range(stored.shape[1] - c + 1)
            for k in range(8) if np.array_equal(numpy_d4(stored[top:top + c, left:left + c], k), shown)]


def test_every_trained_image_is_a_transformed_crop_of_its_stored_image(packed_source):
    """What the step sees (the batch's crops under `dihedral` with the batch's codes) is, image by
    image, a crop of the stored image of its `index` under one of the 8 transforms; over 3 epochs
    all 8 transforms and varied corners occur, and the labels are the row's."""
    batches = list(pipeline.train_batches(packed_source, batch_size=8, crop_size=CROP, seed=5, epoch=1,
                                          num_threads=2, prefetch=2, num_epochs=3))
    assert len(batches) == 9
    seen_codes, corners = set(), set()
    for batch in batches:
        assert batch["image"].shape == (8, CROP, CROP, 4) and batch["image"].dtype == np.uint8
        shown = np.asarray(pipeline.dihedral(jnp.asarray(batch["image"]), jnp.asarray(batch["d4"])))
        for image, row, code, labels in zip(shown, batch["index"], batch["d4"], batch["labels"]):
            found = matches(np.asarray(packed_source.images[packed_source.rows[row]]), image)
            assert any(k == code for _, _, k in found), (row, code)
            corners |= {(top, left) for top, left, k in found if k == code}
            np.testing.assert_array_equal(labels, packed_source.labels[row])
            seen_codes.add(int(code))
    assert seen_codes == set(range(8)) and len(corners) > 8
    for epoch in range(3):   # an epoch is a permutation of the rows
        assert sorted(np.concatenate([b["index"] for b in batches[3 * epoch:3 * epoch + 3]])) == list(range(24))


def test_train_step_applies_each_images_transform(packed_source):
    """The jitted, sharded step with the batch's codes takes the step the plain step takes on the
    images transformed on the host (numpy)."""
    config = tiny_config()
    config.data.crop_size = 32
    mesh = sharding.make_mesh()
    batch = next(iter(pipeline.train_batches(packed_source, batch_size=8, crop_size=32, seed=0, epoch=0,
                                             num_threads=1, prefetch=1)))
    assert len(set(batch["d4"].tolist())) > 1
    host = np.stack([numpy_d4(image, k) for image, k in zip(batch["image"], batch["d4"])])
    step = make_train_step(config, mesh)
    images, labels, d4 = sharding.put_batch(mesh, (batch["image"], batch["labels"], batch["d4"]))
    with_codes, _ = step(initial_state(config, mesh), images, labels, jax.random.key(0), d4)
    on_host, _ = step(initial_state(config, mesh), *sharding.put_batch(mesh, (host, batch["labels"])),
                      jax.random.key(0))
    for a, b in zip(jax.tree.leaves(jax.device_get(with_codes.params)), jax.tree.leaves(jax.device_get(on_host.params))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_one_iterator_of_several_epochs_is_the_epochs_one_by_one(packed_source, num_workers):
    """Epochs 2-4 from batch 1 of epoch 2 (a resumed run's iterator, whose reader processes live
    for all three) are epoch 2's batches from 1 on, then epochs 3 and 4 whole; and epochs differ."""
    kwargs = dict(batch_size=8, crop_size=CROP, seed=3, num_threads=2, prefetch=2)
    one_by_one = [b for e in (2, 3, 4) for b in pipeline.train_batches(packed_source, epoch=e, **kwargs)][1:]
    batches = pipeline.train_batches(packed_source, epoch=2, start_batch=1, num_epochs=3, num_workers=num_workers,
                                     **kwargs)
    try:
        together = list(batches)
    finally:
        batches.close()
    assert len(together) == len(one_by_one) == 8
    for a, b in zip(together, one_by_one):
        for key in ("image", "labels", "index", "d4"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(together[2]["index"], together[5]["index"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_passes_of_one_validation_iterator_are_each_a_whole_pass(packed_source, num_workers):
    """A run's validations read one iterator of several passes (its reader processes live for the
    run): each pass is the one-pass iterator's batches, the last batch padded and masked alike."""
    kwargs = dict(batch_size=10, num_threads=2, prefetch=2)
    once = list(pipeline.eval_batches(packed_source, **kwargs))
    batches = pipeline.eval_batches(packed_source, num_workers=num_workers, num_passes=3, **kwargs)
    try:
        passes = [list(itertools.islice(batches, pipeline.eval_batch_count(len(packed_source), 10)))
                  for _ in range(3)]
        assert next(batches, None) is None
    finally:
        batches.close()
    assert len(once) == 3 and once[-1]["mask"].sum() == 4
    for again in passes:
        assert len(again) == len(once)
        for a, b in zip(again, once):
            for key in ("image", "labels", "index", "mask"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_readers_are_sized_to_the_host(monkeypatch, packed_source, tmp_path):
    """"auto": a packed store is read by threads alone (one a CPU, at most 8); decoding uses a reader
    process per CPU but one on hosts of more than 2; prefetch never falls below the threads; given
    numbers are kept."""
    data = tiny_config().data
    decoded = pipeline.ImageSource(tmp_path, np.array(["a"]), np.zeros((1, 28), np.uint8))
    expected = {1: ((1, 0, 4), (1, 0, 4)), 2: ((2, 0, 4), (2, 0, 4)), 16: ((8, 0, 8), (2, 15, 4)),
                64: ((8, 0, 8), (2, 63, 4))}
    data.num_threads, data.num_workers = "auto", "auto"
    for cpus, (packed, decoding) in expected.items():
        monkeypatch.setattr(pipeline, "host_cpus", lambda cpus=cpus: cpus)
        assert pipeline.readers(data, packed_source) == packed
        assert pipeline.readers(data, decoded) == decoding
    data.num_threads, data.num_workers, data.prefetch = 6, 3, 2
    assert pipeline.readers(data, decoded) == (6, 3, 6)


def test_no_grain_prefetch_warning(packed_source, caplog):
    """More threads than `prefetch` batches: the buffer is raised to the threads, so grain never warns."""
    with caplog.at_level(logging.WARNING):
        list(pipeline.train_batches(packed_source, batch_size=4, crop_size=CROP, seed=0, epoch=0, num_threads=4,
                                    prefetch=1))
        list(pipeline.eval_batches(packed_source, batch_size=5, num_threads=4, prefetch=1))
    assert not [r for r in caplog.records if "prefetch" in r.getMessage()]


def test_batch_buffers_are_reused_only_once_nothing_else_holds_them():
    """A batch array comes back for another batch only when no batch, view of it or other holder
    is left; while anything holds it, its pixels stay as they were."""
    buffers = pipeline.BatchBuffers(keep=2)
    parts = [np.full((3, 3), i, np.uint8) for i in range(4)]
    a, b = buffers.fill(parts), buffers.fill(parts)
    assert a.ctypes.data != b.ctypes.data
    address = a.ctypes.data
    del a
    c = buffers.fill([p + 10 for p in parts])
    assert c.ctypes.data == address and c[3, 0, 0] == 13         # reused
    np.testing.assert_array_equal(b[:, 0, 0], [0, 1, 2, 3])        # the other untouched
    view = c[2:]
    del c
    d = buffers.fill([p + 20 for p in parts])
    assert d.ctypes.data not in (address, b.ctypes.data)           # the view holds the first; b holds the second
    np.testing.assert_array_equal(view[:, 0, 0], [12, 13])
    e = buffers.fill(parts)                                        # beyond `keep`: a new array, not kept
    assert e.ctypes.data not in (address, b.ctypes.data, d.ctypes.data)
