"""Readers for the other HPA image formats, all returning uint8 (H, W, 4) in R, G, B, Y order.

| `fmt` | files | each channel |
|---|---|---|
| `png` | `{Id}_{color}.png` | 8-bit grayscale PNG (the Kaggle 512 px release); `kaggle.read_image` |
| `tif` | `{Id}_{color}.tif` | full-size original, 2048 or 3072 px, 8- or 16-bit grayscale |
| `jpg` | `{Id}_{color}.jpg` | HPAv18 external data: an RGB JPEG (2048 or 1728 px) per channel |

Rules (the same in training, `python -m hpa_jax.data.check` and `python -m hpa_jax.data.stats`):

* Resizing (`size` > 0) is per plane with PIL's antialiasing filters: `resample="lanczos"`
  (default, as `kaggle.read_image`), `"bilinear"` or `"box"` (area averaging). 8-bit planes are
  resized as 8-bit images; 16-bit planes are resized in float32 and rounded once, afterwards.
* 16-bit TIFF to 8-bit (`depth16`): `"linear"` (default) maps the full range 0..65535 linearly
  onto 0..255, `round(x / 257)` (65535 / 255 = 257), so an 8-bit image saved as 16-bit with the
  usual x * 257 comes back exactly. `"percentile"` instead stretches each plane of each image so
  its 0.1th..99.9th percentiles span 0..255 (for 12-bit data stored in 16 bits, which the linear
  rule leaves dark); it discards the absolute intensity, which the protein channel's brightness
  carries, so it is not the default.
* HPAv18 JPEGs: each channel file is an RGB JPEG coloured like its channel; the plane of the
  matching colour is taken: red -> R of the red file, green -> G of the green file, blue -> B of
  the blue file. The yellow file is yellow (R ~ G, B ~ 0); `yellow="mean_rg"` (default) takes
  floor((R + G) / 2), `"red"` or `"green"` take that one plane. With `resample="bilinear"` and
  size 512 this reproduces the 512 PNGs that HPAv18 users converted (and ../shared/data's
  `hpav18_sample/train`) exactly. A grayscale (mode L) JPEG is taken as is.
"""

import os
import pathlib

import numpy as np
import tifffile
from PIL import Image

from hpa_jax.classes import CHANNELS
from hpa_jax.data import kaggle
from hpa_jax.data.kaggle import (
    MISSING_FILE,
    UNREADABLE,
    WRONG_MODE,
    Problem,
    ProblemError,
    channel_planes,
    resize_uint8,
)
from hpa_jax.errors import ConfigError

FORMATS = ("png", "tif", "jpg")
EXTENSIONS = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}
YELLOW_RULES = ("mean_rg", "red", "green")
DEPTH16_RULES = ("linear", "percentile")
# The RGB plane a channel file's colour is in (yellow has its own rule).
_JPEG_PLANE = {"red": 0, "green": 1, "blue": 2}


def _check_option(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}")


def open_tif_plane(path: pathlib.Path, color: str) -> np.ndarray:
    """One full-size channel file as a 2-D uint8 or uint16 array (not yet scaled or resized)."""
    try:
        with tifffile.TiffFile(path) as tif:
            plane = tif.asarray()
    except FileNotFoundError:
        raise ProblemError(Problem(MISSING_FILE, str(path), f"missing {color} channel file")) from None
    except Exception as e:  # noqa: BLE001 - tifffile raises TiffFileError, ValueError, struct.error, ...
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ProblemError(Problem(UNREADABLE, str(path), f"cannot decode TIFF ({message})")) from None
    if plane.size == 0:
        raise ProblemError(Problem(UNREADABLE, str(path), "cannot decode TIFF (no image data)"))
    if plane.ndim == 3 and 1 in (plane.shape[0], plane.shape[-1]):
        plane = plane.reshape(plane.shape[1:] if plane.shape[0] == 1 else plane.shape[:2])
    if plane.ndim != 2 or plane.dtype not in (np.uint8, np.uint16):
        shape = "x".join(map(str, plane.shape))
        raise ProblemError(Problem(WRONG_MODE, str(path), f"expected a grayscale 8- or 16-bit TIFF, got shape "
                                                          f"{shape} dtype {plane.dtype}"))
    return plane


def jpeg_plane_opener(yellow: str = "mean_rg"):
    """`open_plane(path, color)` for HPAv18 JPEGs: the colour plane of each RGB file (see the module doc)."""
    _check_option("yellow rule", yellow, YELLOW_RULES)

    def open_jpg_plane(path: pathlib.Path, color: str) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img.load()
        except FileNotFoundError:
            raise ProblemError(Problem(MISSING_FILE, str(path), f"missing {color} channel file")) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ProblemError(Problem(UNREADABLE, str(path), f"cannot decode JPEG ({e})")) from None
        if img.mode == "L":
            return np.asarray(img, np.uint8)
        if img.mode != "RGB":
            raise ProblemError(Problem(WRONG_MODE, str(path), f"expected an RGB (or grayscale) JPEG, "
                                                              f"got PIL mode {img.mode}"))
        rgb = np.asarray(img, np.uint8)
        if color != "yellow":
            return np.ascontiguousarray(rgb[..., _JPEG_PLANE[color]])
        if yellow == "mean_rg":
            return ((rgb[..., 0].astype(np.uint16) + rgb[..., 1]) // 2).astype(np.uint8)
        return np.ascontiguousarray(rgb[..., _JPEG_PLANE[yellow]])

    return open_jpg_plane


def plane_opener(fmt: str, *, yellow: str = "mean_rg"):
    """The `open_plane(path, color)` of a format: a 2-D uint8 (uint16 for 16-bit TIFF) array, or a
    `ProblemError` naming the file."""
    _check_option("image format", fmt, FORMATS)
    return {"png": kaggle.open_png_plane, "tif": open_tif_plane}.get(fmt) or jpeg_plane_opener(yellow)


def to_uint8(plane: np.ndarray, size: int = 0, *, resample: str = "lanczos", depth16: str = "linear") -> np.ndarray:
    """A 2-D uint8 or uint16 plane -> uint8, resized to size x size (0 keeps it); see the module doc."""
    if plane.dtype == np.uint8:
        return resize_uint8(plane, size, resample)
    _check_option("16-bit rule", depth16, DEPTH16_RULES)
    values = plane.astype(np.float32)
    if size and plane.shape != (size, size):
        values = np.asarray(Image.fromarray(values).resize((size, size), kaggle.RESAMPLING[resample]))
    if depth16 == "linear":
        values = values / 257.0
    else:
        low, high = np.percentile(plane, (0.1, 99.9))
        values = (values - low) * (255.0 / max(high - low, 1.0))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_sample(folder, image_id: str, *, fmt: str = "png", size: int = 0, yellow: str = "mean_rg",
                resample: str = "lanczos", depth16: str = "linear") -> np.ndarray:
    """Reads the 4 channel files of `image_id` in `folder` into uint8 (H, W, 4), R,G,B,Y.

    fmt: "png" | "tif" | "jpg" (see the module doc for the files and conversion rules).
    size > 0 resizes each plane to size x size. Raises a one-line `DataError` naming the file at
    the first problem: missing channel file, undecodable or truncated file, wrong mode or dtype,
    channels of different sizes. `fmt="png"` with the default resample is `kaggle.read_image`.
    """
    _check_option("image format", fmt, FORMATS)
    _check_option("resample filter", resample, tuple(kaggle.RESAMPLING))
    _check_option("16-bit rule", depth16, DEPTH16_RULES)
    planes, _ = channel_planes(folder, image_id, EXTENSIONS[fmt], plane_opener(fmt, yellow=yellow))
    return np.stack([to_uint8(p, size, resample=resample, depth16=depth16) for p in planes], axis=-1)


def image_problems(folder, image_id: str, *, fmt: str = "png", yellow: str = "mean_rg") -> list[Problem]:
    """Every problem of one image's channel files (what `read_sample` would raise first), or []."""
    return inspect_image(folder, image_id, fmt=fmt, yellow=yellow)[1]


def inspect_image(folder, image_id: str, *, fmt: str = "png",
                  yellow: str = "mean_rg") -> tuple[tuple[int, ...] | None, list[Problem]]:
    """(shape and dtype of the image's planes as `(h, w, bits)`, or None when none opened; every problem)."""
    opener = plane_opener(fmt, yellow=yellow)
    planes, problems = channel_planes(folder, image_id, EXTENSIONS[fmt], opener, collect=True)
    opened = [p for p in planes if p is not None]
    shape = (*opened[0].shape, opened[0].dtype.itemsize * 8) if opened else None
    return shape, problems


def scan_folder(folder, fmt: str = "png") -> tuple[dict[str, list[str]], list[str], dict[str, int]]:
    """Lists an image folder: ({Id: its channel colours present, sorted Ids}, names with the
    format's extension that are not `{Id}_{color}.ext`, {extension: file count})."""
    _check_option("image format", fmt, FORMATS)
    extension = EXTENSIONS[fmt]
    ids, unexpected, extensions = {}, [], {}
    with os.scandir(folder) as entries:   # names and types only: no Path object or stat per file (100k+ files)
        files = sorted((entry.name, entry.is_file()) for entry in entries)
    for name, is_file in files:
        stem, dot, suffix = name.rpartition(".")
        suffix = dot + suffix if stem else ""
        extensions[suffix.lower()] = extensions.get(suffix.lower(), 0) + 1
        if suffix != extension:
            continue
        image_id, _, color = stem.rpartition("_")
        if image_id and color in CHANNELS and is_file:
            ids.setdefault(image_id, []).append(color)
        else:
            unexpected.append(name)
    return dict(sorted(ids.items())), unexpected, extensions
