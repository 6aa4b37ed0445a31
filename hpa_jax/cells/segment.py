"""Nuclei and cells of a field found without trained weights (scikit-image), for machines that
cannot download HPA-Cell-Segmentation's or cellpose's.

Nuclei: the nucleus (blue) channel lightly smoothed, thresholded by Otsu, holes filled (nucleoli
are dark), touching nuclei split by a watershed of the smoothed distance transform from one
marker per distance peak that stands 0.3 nucleus radii above its saddle (h-maxima), not per
local bump. Cells: the microtubule (red) and ER (yellow) channels, each scaled by its 99th
percentile, summed and smoothed; the field's cells are where that sum is above its Otsu
threshold, or a nucleus is; each nucleus grows into them by a watershed of that sum plus the
(scaled) nucleus channel, flooding down from the bright nuclei, so two cells part where their
signal dips or changes. Foreground that no nucleus reaches and that touches the field's edge
(a cell whose nucleus the edge cut off) becomes a cell of its own when it is cell-sized;
elsewhere it is left as background (a fragment of cytoplasm cut off from its cell by a dark gap).

Every length is a fraction of the field's typical nucleus radius, measured on the image (the
median over the thresholded nuclei of their largest distance to the background): one rule
serves 128 px synthetic fields, 512 px Kaggle PNGs and 2048 px originals.
"""

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

from hpa_jax.classes import CHANNELS
from hpa_jax.data.masks import Masks

_NOISE_SIGMA = 1.0      # px: smoothing of the nucleus channel before its threshold
_DISTANCE_SIGMA = 0.15  # x radius: smoothing of the distance transform (a nucleus's outline is ragged)
_SPLIT_DEPTH = 0.3      # x radius: a distance peak is its own nucleus when it stands this far above its saddle
_MIN_NUCLEUS = 0.15     # x pi radius^2: smaller nuclei are noise, unless cut by the field's edge ...
_MIN_EDGE_NUCLEUS = 0.02  # ... where down to this much of one is kept
_CELL_SIGMA = 0.3       # x radius: smoothing of the cytoplasm channels (filaments and ER mesh into a body)
_MIN_CELL = 0.5         # x pi radius^2: foreground without a nucleus this large is a cell of its own


def segment(image: np.ndarray) -> Masks:
    """Nuclei and cells of one field, an (H, W, 4) R, G, B, Y image (any numeric dtype), as label
    images: cell k holds nucleus k; cells cut off from their nucleus by the field's edge are
    numbered after those with one."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != len(CHANNELS):
        raise ValueError(f"expected an (H, W, {len(CHANNELS)}) image in {', '.join(CHANNELS)} order, got {image.shape}")
    red, blue, yellow = (image[..., CHANNELS.index(c)].astype(np.float32) for c in ("red", "blue", "yellow"))
    nuclei, radius = segment_nuclei(blue)
    return Masks(grow_cells(red, yellow, blue, nuclei, radius), nuclei)


def segment_nuclei(blue: np.ndarray) -> tuple[np.ndarray, float]:
    """(nuclei label image int32, typical nucleus radius in px) of a nucleus channel."""
    smooth = filters.gaussian(np.asarray(blue, np.float32), _NOISE_SIGMA)
    mask = ndi.binary_fill_holes(_above_otsu(smooth))
    distance = ndi.distance_transform_edt(mask)
    parts, count = ndi.label(mask)
    if not count:
        return np.zeros(mask.shape, np.int32), 0.0
    radius = float(np.median(ndi.maximum(distance, parts, np.arange(1, count + 1))))
    area = np.bincount(parts.ravel())
    small = area < np.pi * radius ** 2 * np.where(_at_edge(parts, count), _MIN_EDGE_NUCLEUS, _MIN_NUCLEUS)
    small[0] = False
    parts[small[parts]] = 0
    return _split(filters.gaussian(distance, _DISTANCE_SIGMA * radius), parts, _SPLIT_DEPTH * radius), radius


def _split(distance: np.ndarray, parts: np.ndarray, depth: float) -> np.ndarray:
    """Each connected part of the nuclei's mask cut into one nucleus per peak of `distance` that
    stands `depth` above its saddle (one nucleus when none does: a nucleus thinner than that),
    by a watershed of the distance; worked part by part in its bounding box, so the cost follows
    the nuclei's area, not the field's."""
    nuclei = np.zeros(parts.shape, np.int32)
    done = 0
    for i, box in enumerate(ndi.find_objects(parts), 1):
        if box is None:
            continue
        own = parts[box] == i
        peaks = np.where(own, distance[box], 0)
        markers, found = ndi.label(morphology.h_maxima(peaks, depth) & own)
        inside = segmentation.watershed(-peaks, markers, mask=own) if found > 1 else own.astype(np.int32)
        nuclei[box] = np.where(own, inside + done, nuclei[box])
        done += max(found, 1)
    return nuclei


def grow_cells(red: np.ndarray, yellow: np.ndarray, blue: np.ndarray, nuclei: np.ndarray, radius: float) -> np.ndarray:
    """Cells (label image int32) grown from `nuclei` (cell k from nucleus k); `radius` is the
    typical nucleus radius (`segment_nuclei`). The foreground is the microtubule and ER signal
    above its Otsu threshold, plus the nuclei; the flooding runs down from the nuclei, so the
    nucleus channel joins the landscape (alone, the cytoplasm channels are dim over a nucleus and
    a neighbour's flood would reach the cytoplasm around it first). No nuclei, no cells: without
    them the field has no scale, and nothing to grow from."""
    if not nuclei.any():
        return np.zeros(nuclei.shape, np.int32)
    smooth = lambda x: filters.gaussian(x, max(_CELL_SIGMA * radius, _NOISE_SIGMA))   # noqa: E731
    cytoplasm = _scaled(red) + _scaled(yellow)
    mask = ndi.binary_fill_holes(_above_otsu(smooth(cytoplasm)) | (nuclei > 0))
    cells = segmentation.watershed(-smooth(cytoplasm + _scaled(blue)), nuclei, mask=mask).astype(np.int32)
    rest, count = ndi.label(mask & (cells == 0))
    if count:
        keep = (np.bincount(rest.ravel()) >= _MIN_CELL * np.pi * radius ** 2) & _at_edge(rest, count)
        number = np.where(keep, np.cumsum(keep) + int(nuclei.max()), 0).astype(np.int32)
        cells = np.where(rest > 0, number[rest], cells)
    return cells


def _at_edge(labels: np.ndarray, count: int) -> np.ndarray:
    """(count + 1,) bool: which labels touch the field's edge (the background, 0, never)."""
    edge = np.zeros(count + 1, bool)
    edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    edge[0] = False
    return edge


def _scaled(channel: np.ndarray) -> np.ndarray:
    """A channel divided by its 99th percentile: each channel weighs alike, whatever its exposure."""
    channel = np.asarray(channel, np.float32)
    return channel / max(float(np.percentile(channel, 99)), 1e-6)


def _above_otsu(image: np.ndarray) -> np.ndarray:
    """Pixels above the image's Otsu threshold (none in a flat image)."""
    if image.min() == image.max():
        return np.zeros(image.shape, bool)
    return image > filters.threshold_otsu(image)

