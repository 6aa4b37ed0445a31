"""The Kaggle HPA layout: `train.csv` (Id,Target) and one 8-bit PNG per channel per image.

Every reader error is a `DataError` whose one-line message names the file and the problem,
so a bad download fails at the first image that is wrong, not as a shape error deep in XLA.

The checks are written once, as functions that find *every* `Problem` (what `python -m
hpa_jax.data.check` reports), and the readers raise the first one (what training does).
"""

import dataclasses
import pathlib
import struct
import zlib
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from hpa_jax.classes import CHANNELS, NUM_CLASSES
from hpa_jax.errors import DataError

# Problem kinds, the headings of the check report.
CSV_NOT_FOUND = "CSV not found"
EMPTY_CSV = "empty CSV"
MALFORMED_CSV = "malformed CSV"
DUPLICATE_ID = "duplicate Id"
NO_LABELS = "image without labels"
BAD_TOKEN = "Target token not an integer"
BAD_CLASS = "class index not in 0..27"
MISSING_FILE = "missing channel file"
UNREADABLE = "unreadable or truncated image"
WRONG_MODE = "wrong image mode or dtype"
SIZE_MISMATCH = "channel sizes differ"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: `str(problem)` is the one-line `path: detail` message."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


class ProblemError(DataError):
    """The `DataError` a reader raises for a `Problem` (kept as `.problem` for the checker)."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _problem(kind: str, path, detail: str) -> Problem:
    return Problem(kind, str(path), detail)


def labels_problems(path, *, target_column: str = "Target") -> tuple[pd.DataFrame | None, list[Problem]]:
    """Reads an `Id,Target` CSV and finds every problem in it, in the order `read_labels_csv` checks.

    A problem with the file as a whole (not found, empty, malformed, no rows) returns `(None,
    [that problem])`. Otherwise the frame (with a `labels` column of sorted class-index tuples,
    empty for a row with a bad Target) and a list of the duplicate-Id and then per-row Target
    problems, possibly empty.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None, [_problem(CSV_NOT_FOUND, path, "file not found")]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return None, [_problem(EMPTY_CSV, path, f"empty CSV (expected a header Id,{target_column})")]
    except pd.errors.ParserError as e:
        return None, [_problem(MALFORMED_CSV, path, f"malformed CSV ({str(e).splitlines()[0]})")]
    except UnicodeDecodeError as e:
        return None, [_problem(MALFORMED_CSV, path, f"malformed CSV (not UTF-8 text: {e.reason} at byte {e.start})")]
    if not isinstance(frame.index, pd.RangeIndex):
        # Every row has more fields than the header: pandas would silently take the first
        # column as the index and shift Id and Target by one.
        return None, [_problem(MALFORMED_CSV, path, f"malformed CSV (rows have more fields than the header "
                                                    f"{','.join(frame.columns)})")]
    missing = {"Id", target_column} - set(frame.columns)
    if missing:
        return None, [_problem(MALFORMED_CSV, path, f"missing column(s) {', '.join(sorted(missing))} "
                                                    f"(header is {','.join(frame.columns)})")]
    if frame.empty:
        return None, [_problem(EMPTY_CSV, path, "no rows after the header")]
    problems = []
    duplicated = frame["Id"][frame["Id"].duplicated()]
    for row_id in duplicated:
        problems.append(_problem(DUPLICATE_ID, path, f"duplicate Id {row_id!r} ({len(duplicated)} duplicates)"))
    frame = frame.copy()
    labels = []
    for row_id, target in zip(frame["Id"], frame[target_column]):
        parsed = _parse_target(path, row_id, target)
        if isinstance(parsed, Problem):
            problems.append(parsed)
            parsed = ()
        labels.append(parsed)
    frame["labels"] = labels
    return frame, problems


def read_labels_csv(path, *, target_column: str = "Target") -> pd.DataFrame:
    """Reads an `Id,Target` CSV and checks it: not empty, unique Ids, integer classes 0..27.

    Returns the frame with an added `labels` column (sorted tuples of class indices).
    Raises a one-line `DataError` for the first problem `labels_problems` finds.
    """
    frame, problems = labels_problems(path, target_column=target_column)
    if problems:
        raise ProblemError(problems[0])
    return frame


def _parse_target(path, row_id: str, target) -> tuple[int, ...] | Problem:
    tokens = target.split() if isinstance(target, str) else []
    if not tokens:
        return _problem(NO_LABELS, path, f"Id {row_id} has no labels")
    try:
        labels = sorted({int(t) for t in tokens})
    except ValueError:
        return _problem(BAD_TOKEN, path, f"Id {row_id} has a Target token that is not an integer: {target!r}")
    bad = [c for c in labels if not 0 <= c < NUM_CLASSES]
    if bad:
        return _problem(BAD_CLASS, path,
                        f"Id {row_id} has unknown class index {bad[0]} (expected 0..{NUM_CLASSES - 1})")
    return tuple(labels)


def multi_hot(labels_column, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Sequence of label tuples -> (N, num_classes) uint8 indicator matrix."""
    out = np.zeros((len(labels_column), num_classes), np.uint8)
    for i, labels in enumerate(labels_column):
        out[i, list(labels)] = 1
    return out


def pil_png_plane(path: pathlib.Path, color: str) -> np.ndarray:
    """`open_png_plane` through PIL alone (the reference decoder, and the one that words the problems)."""
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise ProblemError(_problem(MISSING_FILE, path, f"missing {color} channel file")) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ProblemError(_problem(UNREADABLE, path, f"cannot decode PNG ({e})")) from None
    if img.mode != "L":
        raise ProblemError(_problem(WRONG_MODE, path, f"expected an 8-bit grayscale PNG, got PIL mode {img.mode}"))
    return np.asarray(img, np.uint8)


def open_png_plane(path: pathlib.Path, color: str) -> np.ndarray:
    """One channel file as a 2-D uint8 array; a `ProblemError` if it is missing, undecodable
    (including truncated) or not an 8-bit grayscale PNG.

    An 8-bit grayscale PNG whose chunks before the image data are intact is decoded by OpenCV
    (libpng, 1.1-1.3x PIL's rate here), every other file by PIL (`pil_png_plane`): the pixels are PIL's bit
    for bit, and a file OpenCV refuses (libpng also checks what PIL skips, e.g. the image data's
    checksums) is PIL's to accept or to name the problem of, in PIL's words."""
    data = channel_bytes(path, color)
    shape = _gray8_png_shape(data)
    if shape is not None:
        cv2 = opencv()
        plane = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if plane is not None and plane.dtype == np.uint8 and plane.shape == shape:
            return plane
    return pil_png_plane(path, color)


def channel_bytes(path: pathlib.Path, color: str) -> bytes:
    """A channel file's bytes for a fast decoder: a missing file is the `ProblemError` PIL's path
    raises; any other read error gives no bytes, leaving the file to PIL to name its problem."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ProblemError(_problem(MISSING_FILE, path, f"missing {color} channel file")) from None
    except OSError:
        return b""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gray8_png_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an 8-bit grayscale PNG (what PIL opens as mode L) whose chunks before the
    image data have their checksums (which PIL checks and libpng only warns about when a chunk is
    ancillary); None for any other bytes."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    if depth != 8 or color_type != 0:
        return None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            return height, width
        end = pos + 8 + length
        if end + 4 > len(data) or zlib.crc32(data[pos + 4:end]) != struct.unpack(">I", data[end:end + 4])[0]:
            return None
        pos = end + 4
    return None


def channel_planes(folder, image_id: str, extension: str, open_plane: Callable[[pathlib.Path, str], np.ndarray],
                   *, collect: bool = False) -> tuple[list[np.ndarray | None], list[Problem]]:
    """Opens `{folder}/{image_id}_{color}{extension}` for the 4 colours with `open_plane(path, color)`
    and checks that all planes have the size of the first one that opened.

    `collect=False` raises the first problem (the planes are then all arrays); `collect=True`
    returns every problem, with None for the planes that could not be opened.

    An opener that decodes at a reduced scale (JPEG DCT scaling) returns `(plane, (h, w))`, the
    plane and the size stored in the file: the stored sizes are compared, as at full scale.
    """
    folder = pathlib.Path(folder)
    planes, problems, first = [], [], None
    for color in CHANNELS:
        path = folder / f"{image_id}_{color}{extension}"
        try:
            plane = open_plane(path, color)
            plane, stored = plane if isinstance(plane, tuple) else (plane, plane.shape[:2])
            if first is None:
                first = (color, stored)
            elif stored != first[1]:
                (h, w), (fh, fw) = stored, first[1]
                raise ProblemError(_problem(SIZE_MISMATCH, path, f"size {w}x{h} differs from the {first[0]} "
                                                                 f"channel's {fw}x{fh}"))
        except ProblemError as e:
            if not collect:
                raise
            problems.append(e.problem)
            plane = None
        planes.append(plane)
    return planes, problems


# data.resample: today's PIL filters (antialiased both ways: PIL widens the filter when shrinking) ...
RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
              "box": Image.Resampling.BOX}
# ... and OpenCV's (`cv2.resize`): the filter a rule enlarges with; every one shrinks with INTER_AREA
# (each output pixel the area-weighted mean of the input pixels it covers, so no aliasing).
OPENCV_RULES = {"linear": "INTER_LINEAR", "cubic": "INTER_CUBIC", "area": "INTER_AREA"}
RESAMPLE_RULES = (*OPENCV_RULES, *RESAMPLING)
# The default of data.resample, the data tools' --resample and the readers' `resample`: the Kaggle PNGs
# at the paper's size (512 -> 768) pixel for pixel as the 2018 winner's reader (cv2.resize) made them.
DEFAULT_RESAMPLE = "linear"

_opencv = None


def opencv():
    """The `cv2` module, imported on first use (not with this module), its own thread pool set to
    one thread then: readers run in grain's threads and processes, one image each, and OpenCV's
    pool would only add threads to theirs (at these sizes it adds no speed: see scripts/benchmark_input.py)."""
    global _opencv
    if _opencv is None:
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)
        _opencv = cv2
    return _opencv


def resize_image(image: np.ndarray, size: int, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """A uint8 or float32 (H, W) plane or (H, W, C) image resized to size x size by the rule
    `resample` (see `RESAMPLE_RULES`); unchanged when size is 0 or already the size.

    PIL's rules resize each plane on its own (8-bit planes as 8-bit images, float32 ones as mode
    F); OpenCV's with INTER_AREA when the image is larger than the size in either dimension, else
    with the rule's filter, all channels in one call (the pixels of one call per plane, tested;
    INTER_CUBIC, whose 4-channel code rounds otherwise in a few pixels, one call per plane)."""
    height, width = image.shape[:2]
    if not size or (height, width) == (size, size):
        return image
    if resample in RESAMPLING:
        if image.ndim == 3:
            return np.stack([resize_image(image[..., c], size, resample) for c in range(image.shape[-1])], axis=-1)
        return np.asarray(Image.fromarray(image).resize((size, size), RESAMPLING[resample]), image.dtype)
    cv2 = opencv()
    flag = cv2.INTER_AREA if height > size or width > size else getattr(cv2, OPENCV_RULES[resample])
    if flag == cv2.INTER_CUBIC and image.ndim == 3:   # OpenCV's 4-channel cubic differs from its 1-channel one
        return cv2.merge([resize_image(image[..., c], size, resample) for c in range(image.shape[-1])])
    resized = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=flag)
    return resized.reshape(size, size, *image.shape[2:])      # cv2 drops a channel axis of length 1


def resize_uint8(plane: np.ndarray, size: int, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """A 2-D uint8 plane resized to size x size by the rule `resample` (`resize_image`)."""
    return resize_image(plane, size, resample)


def read_image(folder, image_id: str, *, size: int = 0) -> np.ndarray:
    """Reads `{folder}/{image_id}_{red,green,blue,yellow}.png` into uint8 (H, W, 4), R,G,B,Y.

    `size` > 0 resizes each channel to size x size with antialiasing (PIL's Lanczos filter, the
    `resample="lanczos"` of `sources.read_sample`).
    """
    planes, _ = channel_planes(folder, image_id, ".png", open_png_plane)
    return np.stack([resize_uint8(plane, size, "lanczos") for plane in planes], axis=-1)
