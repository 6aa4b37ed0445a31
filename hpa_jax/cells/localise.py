"""Per-cell labels from a model trained on whole fields, by the 2021 challenge's two routes and
their blend (pure functions; `hpa_jax.folder.predict` runs the model and writes the files).

* CAM route (`cam_scores`): class c's map, bilinearly resized to the field without any
  normalisation, averaged over each cell's pixels (its mass divided by its area); each cell's
  density is divided by the densest cell's, and times the field's probability of c. Grad-CAM's
  scale is arbitrary (gradient units), so only ratios between cells mean anything; the ratio to
  the densest cell gives the cell that holds the most of c the field's own probability, and one
  that holds a tenth as much a tenth of it. A density rather than a share of the class's total
  mass, because a share shrinks as a field has more cells (a class in all of 20 cells would give
  each 1/20) and grows with a cell's size; and not per-pixel max normalisation (`maps.resize_map`,
  for drawing), which would tie every cell's score to a single peak pixel and never reach the
  field's probability. A class whose map is zero over every cell says nothing about where it is:
  each cell gets the field's probability.
* Crop route (`cell_crops`): each cell's bounding box grown to a square centred on it, with a
  margin of MARGIN times its long side on each side, the parts past the field's edges black
  (fluorescence's background) and the pixels of other cells blacked out (a neighbour's protein
  must not label this cell); scaled as the whole field is to the run's input size and centred
  on black ("field_scale": the cell as large as the model saw cells), or resized to fill the
  input ("fill", the 2021 entrants' way for models trained on crops); predicted as a field.
* Blend (`blend`): the weighted mean of the two (equal weights by default).
"""

import numpy as np
from scipy import ndimage as ndi

from hpa_jax.data.kaggle import DEFAULT_RESAMPLE, resize_uint8
from hpa_jax.explain.maps import upsample

ROUTES = ("cam", "crop", "blend")
CROPS = ("field_scale", "fill")   # how a cell's square reaches the model's input size (`cell_crops`)
MARGIN = 0.125   # context each side of a cell's crop, x its bounding box's long side (the cell fills 80 %)


def cell_numbers(labels: np.ndarray) -> np.ndarray:
    """The cells' numbers in a label image (0 the background), ascending; gaps allowed."""
    numbers = np.unique(labels)
    return numbers[numbers > 0]


def boxes(labels: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(n, 4) int bounding boxes x0, y0, x1, y1 of `cells` (x1, y1 one past the last pixel)."""
    found = ndi.find_objects(labels)
    out = np.zeros((len(cells), 4), np.int64)
    for i, k in enumerate(cells):
        rows, cols = found[int(k) - 1]
        out[i] = cols.start, rows.start, cols.stop, rows.stop
    return out


def areas(labels: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(n,) pixel counts of `cells`."""
    return np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)[np.asarray(cells, np.int64)]


def cam_scores(cams: np.ndarray, labels: np.ndarray, cells: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(n, C) CAM-route scores in [0, 1] of `cells`: `cams` (C, h, w) maps over the whole field
    (any resolution), `labels` the field's (H, W) label image, `probs` its (C,) probabilities."""
    height, width = labels.shape
    density = np.zeros((len(cells), len(cams)), np.float64)
    if len(cells):
        for c, cam in enumerate(cams):
            density[:, c] = ndi.mean(upsample(cam, height, width), labels, cells)
    density = np.maximum(density, 0)
    top = density.max(axis=0, initial=0)
    relative = np.where(top > 0, density / np.where(top > 0, top, 1), 1.0)
    return (relative * np.asarray(probs, np.float64)).astype(np.float32)


def square_boxes(cell_boxes: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """(n, 3) x0, y0, side of the squares centred on `cell_boxes` (x0, y0, x1, y1), each side the
    box's long side plus `margin` of it on each side (rounded up), holding the whole box."""
    cell_boxes = np.asarray(cell_boxes, np.int64).reshape(-1, 4)
    long = np.maximum(cell_boxes[:, 2] - cell_boxes[:, 0], cell_boxes[:, 3] - cell_boxes[:, 1])
    side = np.ceil(long * (1 + 2 * margin)).astype(np.int64)
    x0 = (cell_boxes[:, 0] + cell_boxes[:, 2] - side) // 2
    y0 = (cell_boxes[:, 1] + cell_boxes[:, 3] - side) // 2
    return np.stack([x0, y0, side], axis=1)


def cell_crops(image: np.ndarray, labels: np.ndarray, cells: np.ndarray, size: int, *, margin: float = MARGIN,
               resample: str = DEFAULT_RESAMPLE, scale: float | None = None) -> np.ndarray:
    """(n, size, size, C) uint8 crops of `cells` from `image` (H, W, C): the square of
    `square_boxes`, black past the field's edges and where other cells are, resized by the
    reader's rule `resample` to fill `size` x `size` (`scale` None, CROPS "fill"), or by `scale`
    (the field's own factor to the model's input; CROPS "field_scale") and centred on a black
    `size` x `size` canvas: the cell as large as the model saw cells in training, alone in a
    dark field (a square larger than the canvas at that scale is shrunk to fit it)."""
    image = np.asarray(image)
    height, width = labels.shape
    out = np.zeros((len(cells), size, size, image.shape[-1]), np.uint8)
    for i, (k, (x0, y0, side)) in enumerate(zip(cells, square_boxes(boxes(labels, cells), margin))):
        crop = np.zeros((side, side, image.shape[-1]), np.uint8)
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y0 + side, height), min(x0 + side, width)
        inside = image[top:bottom, left:right].copy()
        owner = labels[top:bottom, left:right]
        inside[(owner != 0) & (owner != k)] = 0
        crop[top - y0:bottom - y0, left - x0:right - x0] = inside
        shown = size if scale is None else int(min(max(round(side * scale), 1), size))
        if shown != side:
            crop = np.stack([resize_uint8(crop[..., c], shown, resample) for c in range(crop.shape[-1])], axis=-1)
        start = (size - shown) // 2
        out[i, start:start + shown, start:start + shown] = crop
    return out


def field_scale(field_shape: tuple[int, int], size: int, tile: bool) -> float:
    """The factor by which the model gets a field of `field_shape` (H, W): resized to `size` x
    `size` (`tile` False; the mean of the two sides' factors when the field is not square), or
    cut into tiles at its own resolution (`tile`: 1, or the factor that brings its short side up
    to `size`)."""
    height, width = field_shape
    if tile:
        return max(1.0, size / min(height, width))
    return float(np.sqrt(size / height * size / width))


def blend(cam: np.ndarray, crop: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The routes' weighted mean: `weight` of the CAM route's scores, the rest the crop route's."""
    return (weight * np.asarray(cam, np.float32) + (1 - weight) * np.asarray(crop, np.float32)).astype(np.float32)
