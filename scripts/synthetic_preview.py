"""Draws one synthetic field per class the generator supports: the composite (red = R + Y/2,
green = G + Y/2, blue = B, as HPA images are usually shown) beside the green channel alone.

    python scripts/synthetic_preview.py --out docs/synthetic_classes.png
"""

import argparse
import pathlib

import matplotlib
import numpy as np

from hpa_jax.classes import CLASS_NAMES
from hpa_jax.data import synthetic
from hpa_jax.explain.maps import composite

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/synthetic_classes.png")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    classes = synthetic.SUPPORTED_CLASSES
    cols = 3
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2.2 * 2 * cols, 2.4 * rows))
    for ax in axes.ravel():
        ax.axis("off")
    for i, c in enumerate(classes):
        field = synthetic.render_field([c], args.image_size, np.random.default_rng([args.seed, c]))
        ax_rgb, ax_green = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        ax_rgb.imshow(composite(field))
        ax_rgb.set_title(f"{c} {CLASS_NAMES[c]}", fontsize=8, loc="left")
        ax_green.imshow(field[..., 1], cmap="gray", vmin=0, vmax=255)
        ax_green.set_title("green", fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=62)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
