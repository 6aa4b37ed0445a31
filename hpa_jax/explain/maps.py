"""Drawing class activation maps (`explain.py` computes them) over the image's RGB composite.

Per image: one PNG per class shown (`{Id}/{cc}_{Class_name}.png`) and a contact sheet
`{Id}.png` with the composite, the protein (green) channel alone and every class's map with its
probability. Each map is scaled by its own maximum, so it says where a class was found, not
how strongly (the probability says that).
"""

import pathlib

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from hpa_jax.classes import CLASS_NAMES, class_slug

DISPLAY_MIN, DISPLAY_MAX = 256, 768   # displayed side: small inputs magnified, full-size fields reduced
HEAT_ALPHA = 0.6                      # opacity of the heat at its maximum


def composite(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 4) R,G,B,Y -> uint8 RGB as HPA images are usually shown: red = R + Y/2,
    green = G + Y/2, blue = B."""
    r, g, b, y = (image[..., i].astype(np.float32) for i in range(4))
    return np.clip(np.stack([r + y / 2, g + y / 2, b], axis=-1), 0, 255).astype(np.uint8)


def display_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) to draw an image at: its long side between DISPLAY_MIN and DISPLAY_MAX."""
    scale = min(max(1.0, DISPLAY_MIN / max(height, width)), DISPLAY_MAX / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) float map bilinearly resized to (height, width), its values' scale kept."""
    return np.asarray(Image.fromarray(np.asarray(cam, np.float32)).resize((width, height), Image.Resampling.BILINEAR))


def resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) float map bilinearly resized to (height, width), scaled to [0, 1] by its maximum."""
    cam = upsample(cam, height, width)
    top = float(cam.max())
    return np.clip(cam / top, 0, 1) if top > 0 else np.zeros_like(cam)


def overlay(rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The heat map (jet colours, opacity growing with the heat) over an RGB uint8 image."""
    heat = resize_map(cam, *rgb.shape[:2])
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    alpha = HEAT_ALPHA * heat[..., None]
    return np.clip(rgb * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def write_cams(out_dir, image_id: str, image: np.ndarray, maps: dict[int, np.ndarray], probs: np.ndarray,
               predicted: np.ndarray) -> pathlib.Path:
    """Writes the per-class PNGs and the contact sheet of one image; returns the sheet's path.

    `image` is what the model saw (uint8 (H, W, 4)), `maps` {class index: (h, w) map} for the
    classes to show, `probs` the image's (C,) probabilities and `predicted` its (C,) decisions
    (a class shown without being predicted, the top class of an image with none, says so)."""
    out_dir = pathlib.Path(out_dir)
    folder = out_dir / image_id
    folder.mkdir(parents=True, exist_ok=True)
    height, width = display_size(*image.shape[:2])
    rgb = np.asarray(Image.fromarray(composite(image)).resize((width, height), Image.Resampling.LANCZOS))
    green = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., 1])).resize((width, height),
                                                                                  Image.Resampling.LANCZOS))
    panels = [("composite (R+Y/2, G+Y/2, B)", rgb), ("protein (green)", np.stack([np.zeros_like(green), green,
                                                                                  np.zeros_like(green)], -1))]
    for c, cam in maps.items():
        heat = overlay(rgb, cam)
        Image.fromarray(heat).save(folder / f"{class_slug(c)}.png")
        note = "" if predicted[c] else " (top class, below threshold)"
        panels.append((f"{c} {CLASS_NAMES[c]}: {probs[c]:.2f}{note}", heat))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows + 0.3))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, picture) in zip(axes.ravel(), panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=8)
    fig.suptitle(image_id, fontsize=9)
    fig.tight_layout()
    sheet = out_dir / f"{image_id}.png"
    fig.savefig(sheet, dpi=80)
    return sheet
