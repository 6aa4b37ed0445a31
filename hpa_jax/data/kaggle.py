"""The Kaggle HPA layout: `train.csv` (Id,Target) and one 8-bit PNG per channel per image.

Every reader error is a `DataError` whose one-line message names the file and the problem,
so a bad download fails at the first image that is wrong, not as a shape error deep in XLA.

The checks are written once, as functions that find *every* `Problem` (what `python -m
hpa_jax.data.check` reports), and the readers raise the first one (what training does).
"""

import dataclasses
import pathlib
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


def open_png_plane(path: pathlib.Path, color: str) -> np.ndarray:
    """One channel file as a 2-D uint8 array; a `ProblemError` if it is missing, undecodable
    (including truncated) or not an 8-bit grayscale PNG."""
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


def channel_planes(folder, image_id: str, extension: str, open_plane: Callable[[pathlib.Path, str], np.ndarray],
                   *, collect: bool = False) -> tuple[list[np.ndarray | None], list[Problem]]:
    """Opens `{folder}/{image_id}_{color}{extension}` for the 4 colours with `open_plane(path, color)`
    and checks that all planes have the size of the first one that opened.

    `collect=False` raises the first problem (the planes are then all arrays); `collect=True`
    returns every problem, with None for the planes that could not be opened.
    """
    folder = pathlib.Path(folder)
    planes, problems, first = [], [], None
    for color in CHANNELS:
        path = folder / f"{image_id}_{color}{extension}"
        try:
            plane = open_plane(path, color)
            if first is None:
                first = (color, plane.shape)
            elif plane.shape[:2] != first[1][:2]:
                (h, w), (fh, fw) = plane.shape[:2], first[1][:2]
                raise ProblemError(_problem(SIZE_MISMATCH, path, f"size {w}x{h} differs from the {first[0]} "
                                                                 f"channel's {fw}x{fh}"))
        except ProblemError as e:
            if not collect:
                raise
            problems.append(e.problem)
            plane = None
        planes.append(plane)
    return planes, problems


RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
              "box": Image.Resampling.BOX}


def resize_uint8(plane: np.ndarray, size: int, resample: str = "lanczos") -> np.ndarray:
    """A 2-D uint8 plane resized to size x size with PIL's antialiasing filter (`box` is area
    averaging); unchanged when size is 0 or already the size."""
    if not size or plane.shape == (size, size):
        return plane
    return np.asarray(Image.fromarray(plane).resize((size, size), RESAMPLING[resample]), np.uint8)


def read_image(folder, image_id: str, *, size: int = 0) -> np.ndarray:
    """Reads `{folder}/{image_id}_{red,green,blue,yellow}.png` into uint8 (H, W, 4), R,G,B,Y.

    `size` > 0 resizes each channel to size x size with antialiasing (PIL's Lanczos filter).
    """
    planes, _ = channel_planes(folder, image_id, ".png", open_png_plane)
    return np.stack([resize_uint8(plane, size) for plane in planes], axis=-1)
