"""A user's masks (`hpa_jax.data.masks`): the label images a folder may hold are read, and a file
that is not one stops with one line naming it."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from hpa_jax.data import masks
from hpa_jax.errors import DataError

LABELS = np.array([[0, 0, 3, 3], [7, 0, 3, 3], [7, 7, 0, 0]], np.int32)   # gaps in the numbering are fine


@pytest.mark.parametrize("name, write", [
    ("a_cells.png", lambda p: masks.write_labels(p, LABELS)),                       # what the generator writes: 16-bit
    ("a_cells.png", lambda p: Image.fromarray(LABELS.astype(np.uint8)).save(p)),   # 8-bit
    ("a_cells.png", lambda p: _palette(p)),                                          # palette indices
    ("a_cells.tif", lambda p: tifffile.imwrite(p, LABELS)),                          # int32 TIFF
    ("a_cells.tiff", lambda p: tifffile.imwrite(p, LABELS.astype(np.uint32)[None], photometric="minisblack")),
    ("a_cells.tif", lambda p: tifffile.imwrite(p, LABELS.astype(np.float32))),       # whole numbers as floats
])
def test_label_images_are_read(tmp_path, name, write):
    write(tmp_path / name)
    found = masks.read_masks(tmp_path, "a", (3, 4))
    assert found.cells.dtype == np.int32 and found.nuclei is None
    np.testing.assert_array_equal(found.cells, LABELS)


def _palette(path):
    image = Image.fromarray(LABELS.astype(np.uint8), "L").convert("P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    image.save(path)


def test_nuclei_are_read_when_present_and_written_masks_round_trip(tmp_path):
    big = np.arange(300 * 2, dtype=np.int32).reshape(20, 30) % 700   # numbers above 255 need 16 bits
    masks.write_labels(tmp_path / masks.mask_name("b", "cells"), big)
    masks.write_labels(tmp_path / masks.mask_name("b", "nuclei"), big // 2)
    found = masks.read_masks(tmp_path, "b", (20, 30))
    np.testing.assert_array_equal(found.cells, big)
    np.testing.assert_array_equal(found.nuclei, big // 2)


def _rgb(p):
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(p)


@pytest.mark.parametrize("name, write, message", [
    ("a_cells.png", _rgb, r"3x4x3 values, not one plane"),
    ("a_cells.png", lambda p: Image.fromarray(LABELS > 0).save(p), r"a binary \(0/1\) foreground mask"),
    ("a_cells.png", lambda p: Image.fromarray((LABELS > 0).astype(np.uint8) * 255).save(p), r"only 0 and 255"),
    ("a_cells.tif", lambda p: tifffile.imwrite(p, LABELS * 0.5), r"fractional values"),
    ("a_cells.tif", lambda p: tifffile.imwrite(p, -LABELS), r"negative values \(-7\)"),
    ("a_cells.tif", lambda p: tifffile.imwrite(p, LABELS.astype(np.int64) << 32), r"values above 2147483647"),
    ("a_cells.png", lambda p: masks.write_labels(p, np.zeros((4, 3))), r"3x4 pixels where its image has 4x3"),
    ("a_cells.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really"), r"reading the mask failed"),
    ("a_cells.tif", lambda p: p.write_bytes(b"II*\x00garbage"), r"no image data"),
])
def test_a_bad_mask_is_one_line_naming_the_file(tmp_path, name, write, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError, match=message) as error:
        masks.read_masks(tmp_path, "a", (3, 4))
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


def test_bad_nuclei_mask_is_named_too(tmp_path):
    masks.write_labels(tmp_path / "a_cells.png", LABELS)
    masks.write_labels(tmp_path / "a_nuclei.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"a_nuclei.png: 2x2 pixels where its image has 4x3"):
        masks.read_masks(tmp_path, "a")


def test_missing_or_doubled_masks(tmp_path):
    with pytest.raises(DataError, match=r"no cells mask for a \(expected a_cells.png, .tif or .tiff\)"):
        masks.read_masks(tmp_path, "a")
    masks.write_labels(tmp_path / "a_cells.png", LABELS)
    tifffile.imwrite(tmp_path / "a_cells.tif", LABELS)
    with pytest.raises(DataError, match=r"a_cells.png: also a_cells.tif: keep one cells mask a field"):
        masks.read_masks(tmp_path, "a")


def test_write_labels_refuses_what_a_16_bit_png_cannot_hold(tmp_path):
    for bad in (np.full((2, 2), 70000), np.full((2, 2), -1), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="expected a 2-D label image of numbers 0..65535"):
            masks.write_labels(tmp_path / "x.png", bad)
