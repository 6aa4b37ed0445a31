"""A field's cells drawn over its composite: each cell outlined in the colour of its top predicted
class, numbered as in `cells.csv`, with a legend of the classes shown."""

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.explain.maps import composite, display_size

NONE_COLOUR = (0.6, 0.6, 0.6)   # a cell with no class above its threshold


def class_colours() -> np.ndarray:
    """(28, 3) floats in [0, 1]: one distinct colour a class (tab20, then tab20b's darker ones)."""
    colours = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)
    return np.asarray(colours[:len(CLASS_NAMES)], np.float64)


def write_overlay(path, image_id: str, image: np.ndarray, labels: np.ndarray, cells: np.ndarray,
                  top: np.ndarray) -> None:
    """Draws `image` (H, W, 4 uint8) with the outlines of `cells` of `labels` (H, W), cell i in
    the colour of class `top[i]` (-1: none predicted, grey), at `maps.display_size`; saves a PNG."""
    height, width = display_size(*labels.shape)
    rgb = np.asarray(Image.fromarray(composite(image)).resize((width, height), Image.Resampling.LANCZOS))
    shown = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.Resampling.NEAREST))
    palette = np.zeros((int(labels.max(initial=0)) + 1, 3))
    colours = class_colours()
    for k, c in zip(cells, top):
        palette[int(k)] = colours[c] if c >= 0 else NONE_COLOUR
    edges = find_boundaries(shown, mode="inner") & (shown > 0)
    picture = rgb.astype(np.float64) / 255
    picture[edges] = palette[shown[edges]]
    fig = Figure(figsize=(width / 80 + 2.6, height / 80 + 0.4))
    ax = fig.add_axes((0, 0, width / 80 / (width / 80 + 2.6), 1 - 0.4 / (height / 80 + 0.4)))
    ax.imshow(picture, interpolation="nearest")
    ax.axis("off")
    ax.set_title(image_id, fontsize=8)
    present = [k for k in cells if (shown == k).any()]
    centres = ndi.center_of_mass(np.ones_like(shown), shown, present) if present else []
    for k, (y, x) in zip(present, centres):
        ax.text(x, y, str(int(k)), color="white", fontsize=6, ha="center", va="center")
    classes = sorted({int(c) for c in top if c >= 0})
    handles = [Patch(color=colours[c], label=f"{c} {CLASS_NAMES[c]}") for c in classes]
    if any(c < 0 for c in top):
        handles.append(Patch(color=NONE_COLOUR, label="none above threshold"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=6, frameon=False,
                  title="top predicted class", title_fontsize=6)
    fig.savefig(path, dpi=80)
