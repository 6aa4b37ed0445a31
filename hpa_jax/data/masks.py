"""Label images of a field's cells and nuclei, as files: the user's own masks (from
HPA-Cell-Segmentation, cellpose or anything else), and the synthetic generator's truth.

A folder of masks holds, for each image Id, `{Id}_cells.{png,tif,tiff}` and optionally
`{Id}_nuclei.{png,tif,tiff}`: one plane at the image's own size, 0 the background and one whole
number per cell (or nucleus), in any order and with gaps (cellpose's `_cp_masks.png` renamed, an
HPA-Cell-Segmentation array saved with numbers for cells). PNGs of 8 or 16 bits (also palette
PNGs, whose indices are the numbers) and TIFFs of any integer type, or floats holding whole
numbers, are read. A file that cannot be such a mask (several channels, a 0/1 or 0/255
foreground mask, fractions, negative numbers, another size than its image) stops with one line
naming it. Written masks are 16-bit PNGs (up to 65,535 cells a field).
"""

import pathlib
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image

from hpa_jax.errors import DataError, file_errors

KINDS = ("cells", "nuclei")
EXTENSIONS = (".png", ".tif", ".tiff")
PATTERN = "{Id}_cells.{png,tif,tiff} (and {Id}_nuclei.{png,tif,tiff})"
_LARGEST = np.iinfo(np.int32).max


class Masks(NamedTuple):
    """A field's label images (H, W) int32, 0 the background: `cells` and `nuclei` (None when a
    user's folder has no nuclei mask for the field)."""

    cells: np.ndarray
    nuclei: np.ndarray | None


def mask_name(image_id: str, kind: str) -> str:
    """The file name a mask of `kind` ("cells" or "nuclei") is written under."""
    return f"{image_id}_{kind}.png"


def write_labels(path, labels: np.ndarray) -> None:
    """A label image as a 16-bit PNG."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size and not 0 <= labels.min() <= labels.max() <= np.iinfo(np.uint16).max:
        raise ValueError(f"expected a 2-D label image of numbers 0..65535, got shape {labels.shape}")
    Image.fromarray(labels.astype(np.uint16)).save(path)


def find_mask(folder, image_id: str, kind: str) -> pathlib.Path | None:
    """The mask file of `kind` for `image_id` in `folder`, or None; two (a PNG and a TIFF) are an error."""
    found = [path for ext in EXTENSIONS if (path := pathlib.Path(folder) / f"{image_id}_{kind}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{found[0]}: also {', '.join(p.name for p in found[1:])}: keep one {kind} mask a field")
    return found[0] if found else None


def read_masks(folder, image_id: str, shape: tuple[int, int] | None = None) -> Masks:
    """The cells mask of `image_id` in `folder` (required) and its nuclei mask (if any), each
    checked to be a label image of `shape` (the image's (H, W)) when given."""
    path = find_mask(folder, image_id, "cells")
    if path is None:
        raise DataError(f"{folder}: no cells mask for {image_id} (expected {image_id}_cells.png, .tif or .tiff)")
    cells = read_labels(path, shape)
    path = find_mask(folder, image_id, "nuclei")
    return Masks(cells, None if path is None else read_labels(path, cells.shape))


def read_labels(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One label image as (H, W) int32; a `DataError` naming the file when it is not one (module
    doc), or not of `shape`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such mask file")
    with file_errors(path, "reading the mask"):
        if path.suffix.lower() in (".tif", ".tiff"):
            pixels = tifffile.imread(path)
        else:
            with Image.open(path) as image:
                pixels = np.asarray(image)
    if pixels.ndim == 3 and 1 in (pixels.shape[0], pixels.shape[-1]):
        pixels = pixels.reshape(pixels.shape[1:] if pixels.shape[0] == 1 else pixels.shape[:2])
    problem = _not_labels(pixels)
    if problem:
        raise DataError(f"{path}: {problem}: expected a label image, one plane of whole numbers (0 the background, "
                        f"one number a cell)")
    if shape is not None and pixels.shape != tuple(shape):
        (h, w), (eh, ew) = pixels.shape, shape
        raise DataError(f"{path}: {w}x{h} pixels where its image has {ew}x{eh}: a mask is at its image's own size")
    return pixels.astype(np.int32)


def _not_labels(pixels: np.ndarray) -> str:
    """What keeps `pixels` from being a label image, or ""."""
    if pixels.size == 0:
        return "no image data"
    if pixels.ndim != 2:
        return (f"{'x'.join(map(str, pixels.shape))} values, not one plane (a coloured picture of masks cannot be "
                f"read back)")
    if pixels.dtype == bool:
        return "a binary (0/1) foreground mask"
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        return f"values of type {pixels.dtype}"
    if np.issubdtype(pixels.dtype, np.floating) and not (np.isfinite(pixels) & (pixels == np.round(pixels))).all():
        return "fractional values (a probability map?)"
    low, high = pixels.min(), pixels.max()
    if low < 0:
        return f"negative values ({low})"
    if high > _LARGEST:
        return f"values above {_LARGEST} ({high})"
    if pixels.dtype == np.uint8 and high == 255 and np.isin(pixels, (0, 255)).all():
        return "only 0 and 255, a foreground mask"
    return ""
