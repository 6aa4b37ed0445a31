"""Readers for the other HPA image formats, all returning uint8 (H, W, 4) in R, G, B, Y order.

| `fmt` | files | each channel |
|---|---|---|
| `png` | `{Id}_{color}.png` | 8-bit grayscale PNG (the Kaggle 512 px release); `kaggle.read_image` |
| `tif` | `{Id}_{color}.tif` | full-size original, 2048 or 3072 px, 8- or 16-bit grayscale |
| `jpg` | `{Id}_{color}.jpg` | HPAv18 external data: an RGB JPEG (2048 or 1728 px) per channel |

Rules (one set for training, evaluation, prediction, `python -m hpa_jax.data.stats` and `.pack`:
the config's `data.resample`, `data.yellow`, `data.depth16`, which a packed store records):

* Decoding: PNGs by OpenCV (libpng), JPEGs by libjpeg-turbo (simplejpeg), with PIL's pixels bit
  for bit; a file they refuse or might read otherwise than PIL (another mode, a damaged header,
  a warning) is PIL's, which decodes it or names its problem as before. TIFFs by tifffile.
* Resizing (`size` > 0), `resample` (`data.resample`), measured by `scripts/benchmark.py input`
  (docs/performance.md) on ../shared/data; "pixels" is the mean (max) absolute difference from
  `"lanczos"` in grey levels, Kaggle PNGs 512 -> 768 / HPAv18 JPEGs -> 768:

  | rule | library | enlarging | shrinking | JPEGs | pixels vs `lanczos` |
  |---|---|---|---|---|---|
  | `linear` (default) | OpenCV | INTER_LINEAR (the 2018 winner's) | INTER_AREA | DCT-scaled | 1.66 (83) / 0.51 (39) |
  | `cubic` | OpenCV | INTER_CUBIC | INTER_AREA | DCT-scaled | 0.46 (37) / 0.50 (39) |
  | `area` | OpenCV | INTER_AREA | INTER_AREA | DCT-scaled | 1.78 (83) / 0.51 (39) |
  | `lanczos` | PIL | Lanczos | Lanczos (antialiased) | full size | 0 (the rule before OpenCV's) |
  | `bilinear` | PIL | bilinear | bilinear (antialiased) | full size | 1.67 (83) / 0.59 (44) |
  | `box` | PIL | box (nearest) | box (area averaging) | full size | 3.34 (212) / 0.53 (37) |

  OpenCV's rules resize the 4 channels in one call (`cubic`: one per plane), shrinking (the image
  larger than the size in either dimension) by INTER_AREA, each output pixel the area-weighted mean of the input pixels
  under it (no aliasing), enlarging by the rule's filter; an HPAv18 JPEG is decoded at the
  smallest of libjpeg's M/8 DCT scales that is at least the size (3/8 of 2048 px is exactly
  768; 1728 px decodes at 4/8, 864 px, then shrinks), never below it. PIL's rules decode at full
  size and resize each plane with PIL's filters, today's pixels exactly. 8-bit planes are
  resized as 8-bit images; 16-bit planes in float32, rounded once, afterwards. The default,
  `linear`, is the fastest (with `area`) and gives the Kaggle PNGs at the paper's size exactly
  the 2018 winner's pixels; `cubic` is the closest to the earlier default, `lanczos`.
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
    DEFAULT_RESAMPLE,
    MISSING_FILE,
    OPENCV_RULES,
    RESAMPLE_RULES,
    UNREADABLE,
    WRONG_MODE,
    Problem,
    ProblemError,
    channel_planes,
    resize_image,
)
from hpa_jax.errors import ConfigError

FORMATS = ("png", "tif", "jpg")
EXTENSIONS = {"png": ".png", "tif": ".tif", "jpg": ".jpg"}
YELLOW_RULES = ("mean_rg", "red", "green")
DEPTH16_RULES = ("linear", "percentile")
DECODERS = ("fast", "pil")
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


def _jpeg_plane(pixels: np.ndarray, color: str, yellow: str) -> np.ndarray:
    """The plane of one decoded HPAv18 channel file: (H, W) grayscale as is, else the colour's plane
    of (H, W, 3) RGB, yellow by its rule (see the module doc)."""
    if pixels.ndim == 2:
        return pixels
    if color != "yellow":
        return np.ascontiguousarray(pixels[..., _JPEG_PLANE[color]])
    if yellow == "mean_rg":
        return ((pixels[..., 0].astype(np.uint16) + pixels[..., 1]) // 2).astype(np.uint8)
    return np.ascontiguousarray(pixels[..., _JPEG_PLANE[yellow]])


def _pil_jpeg_pixels(path: pathlib.Path, color: str) -> np.ndarray:
    """A JPEG decoded by PIL at full scale: (H, W) for a grayscale file, (H, W, 3) RGB; a
    `ProblemError` in PIL's words otherwise (the reference decoder, and the one that words the problems)."""
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise ProblemError(Problem(MISSING_FILE, str(path), f"missing {color} channel file")) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ProblemError(Problem(UNREADABLE, str(path), f"cannot decode JPEG ({e})")) from None
    if img.mode not in ("L", "RGB"):
        raise ProblemError(Problem(WRONG_MODE, str(path), f"expected an RGB (or grayscale) JPEG, "
                                                          f"got PIL mode {img.mode}"))
    return np.asarray(img, np.uint8)


def _turbo_jpeg_pixels(data: bytes, size: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(pixels, stored (h, w)) of a YCbCr or grayscale JPEG decoded by libjpeg-turbo (simplejpeg):
    at full scale the pixels PIL decodes, ~2.4x as fast; with `size` > 0 at the smallest of
    libjpeg's M/8 DCT scales that keeps both sides at least `size` (or the stored side: never
    enlarged), e.g. 3/8 of 2048 px is 768. None for any other file, or where libjpeg warns
    (strict): PIL decides those."""
    import simplejpeg  # noqa: PLC0415 - only the JPEG readers need it

    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray"):
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if colorspace == "YCbCr" else "GRAY",
                                        min_height=size, min_width=size, strict=True)
    except ValueError:
        return None
    if pixels.shape[0] < min(size, height) or pixels.shape[1] < min(size, width):
        return None
    return (pixels if colorspace == "YCbCr" else pixels[..., 0]), (height, width)


def jpeg_plane_opener(yellow: str = "mean_rg", *, size: int = 0, decoder: str = "fast"):
    """`open_plane(path, color)` for HPAv18 JPEGs: the colour plane of each RGB file (see the module doc).

    `size` > 0 decodes at libjpeg's reduced (DCT) scale, never below size x size, and returns
    `(plane, stored size)` (`kaggle.channel_planes`); 0 decodes at full scale, PIL's pixels.
    `decoder="pil"` decodes every file with PIL, at full scale."""
    _check_option("yellow rule", yellow, YELLOW_RULES)
    _check_option("decoder", decoder, DECODERS)

    def open_jpg_plane(path: pathlib.Path, color: str) -> np.ndarray | tuple[np.ndarray, tuple[int, int]]:
        decoded = None
        if decoder == "fast":
            data = kaggle.channel_bytes(path, color)
            decoded = _turbo_jpeg_pixels(data, size) if data else None
        if decoded is None:
            return _jpeg_plane(_pil_jpeg_pixels(path, color), color, yellow)
        pixels, stored = decoded
        plane = _jpeg_plane(pixels, color, yellow)
        return (plane, stored) if size else plane

    return open_jpg_plane


def plane_opener(fmt: str, *, yellow: str = "mean_rg", size: int = 0, decoder: str = "fast"):
    """The `open_plane(path, color)` of a format: a 2-D uint8 (uint16 for 16-bit TIFF) array, or a
    `ProblemError` naming the file. `size` > 0 lets JPEGs decode at a reduced scale (no smaller
    than size); `decoder="pil"` decodes PNGs and JPEGs with PIL alone (same pixels, same problems:
    `python -m hpa_jax.data.check`, where libpng's own messages about bad files would add noise)."""
    _check_option("image format", fmt, FORMATS)
    _check_option("decoder", decoder, DECODERS)
    if fmt == "png":
        return kaggle.open_png_plane if decoder == "fast" else kaggle.pil_png_plane
    if fmt == "tif":
        return open_tif_plane
    return jpeg_plane_opener(yellow, size=size, decoder=decoder)


def to_uint8(plane: np.ndarray, size: int = 0, *, resample: str = DEFAULT_RESAMPLE,
             depth16: str = "linear") -> np.ndarray:
    """A 2-D uint8 or uint16 plane -> uint8, resized to size x size (0 keeps it); see the module doc."""
    if plane.dtype == np.uint8:
        return resize_image(plane, size, resample)
    _check_option("16-bit rule", depth16, DEPTH16_RULES)
    values = resize_image(plane.astype(np.float32), size, resample)
    if depth16 == "linear":
        values = values / 257.0
    else:
        low, high = np.percentile(plane, (0.1, 99.9))
        values = (values - low) * (255.0 / max(high - low, 1.0))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_sample(folder, image_id: str, *, fmt: str = "png", size: int = 0, yellow: str = "mean_rg",
                resample: str = DEFAULT_RESAMPLE, depth16: str = "linear") -> np.ndarray:
    """Reads the 4 channel files of `image_id` in `folder` into uint8 (H, W, 4), R,G,B,Y.

    fmt: "png" | "tif" | "jpg" (see the module doc for the files and conversion rules).
    size > 0 resizes the image to size x size by the rule `resample`. Raises a one-line `DataError`
    naming the file at the first problem: missing channel file, undecodable or truncated file,
    wrong mode or dtype, channels of different sizes. `fmt="png"` with `resample="lanczos"` is
    `kaggle.read_image`.
    """
    _check_option("image format", fmt, FORMATS)
    _check_option("resample filter", resample, RESAMPLE_RULES)
    _check_option("16-bit rule", depth16, DEPTH16_RULES)
    opencv = resample in OPENCV_RULES
    opener = plane_opener(fmt, yellow=yellow, size=size if opencv else 0)
    planes, _ = channel_planes(folder, image_id, EXTENSIONS[fmt], opener)
    if not all(p.dtype == np.uint8 for p in planes):         # 16-bit TIFF: each plane by its rule
        return np.stack([to_uint8(p, size, resample=resample, depth16=depth16) for p in planes], axis=-1)
    if not opencv:
        return np.stack([resize_image(p, size, resample) for p in planes], axis=-1)
    if len({p.shape for p in planes}) > 1:                    # a file PIL decoded at full scale among DCT-scaled ones
        planes = [resize_image(p, size, resample) for p in planes]
    return resize_image(kaggle.opencv().merge(planes), size, resample)   # the 4 channels in one call


def image_problems(folder, image_id: str, *, fmt: str = "png", yellow: str = "mean_rg") -> list[Problem]:
    """Every problem of one image's channel files (what `read_sample` would raise first), or []."""
    return inspect_image(folder, image_id, fmt=fmt, yellow=yellow)[1]


def inspect_image(folder, image_id: str, *, fmt: str = "png", yellow: str = "mean_rg",
                  decoder: str = "pil") -> tuple[tuple[int, ...] | None, list[Problem]]:
    """(shape and dtype of the image's planes as `(h, w, bits)`, or None when none opened; every problem).

    Decoded by PIL by default: the fast decoders give PIL's pixels or leave the file to PIL, so
    the verdict is the one `read_sample` reaches, without libpng's messages on stderr."""
    opener = plane_opener(fmt, yellow=yellow, decoder=decoder)
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
