"""The Kaggle HPA layout: `train.csv` (Id,Target) and one 8-bit PNG per channel per image.

Every reader error is a `DataError` whose one-line message names the file and the problem,
so a bad download fails at the first image that is wrong, not as a shape error deep in XLA.
"""

import pathlib

import numpy as np
import pandas as pd
from PIL import Image

from hpa_jax.classes import CHANNELS, NUM_CLASSES
from hpa_jax.errors import DataError


def read_labels_csv(path, *, target_column: str = "Target") -> pd.DataFrame:
    """Reads an `Id,Target` CSV and checks it: not empty, unique Ids, integer classes 0..27.

    Returns the frame with an added `labels` column (sorted tuples of class indices).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty CSV (expected a header Id,{target_column})") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: malformed CSV ({str(e).splitlines()[0]})") from None
    missing = {"Id", target_column} - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))} (header is {','.join(frame.columns)})")
    if frame.empty:
        raise DataError(f"{path}: no rows after the header")
    duplicated = frame["Id"][frame["Id"].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: duplicate Id {duplicated.iloc[0]!r} ({len(duplicated)} duplicates)")
    frame = frame.copy()
    frame["labels"] = [_parse_target(path, row_id, target) for row_id, target in zip(frame["Id"], frame[target_column])]
    return frame


def _parse_target(path, row_id: str, target: str) -> tuple[int, ...]:
    tokens = target.split()
    if not tokens:
        raise DataError(f"{path}: Id {row_id} has no labels")
    try:
        labels = sorted({int(t) for t in tokens})
    except ValueError:
        raise DataError(f"{path}: Id {row_id} has a Target token that is not an integer: {target!r}") from None
    bad = [c for c in labels if not 0 <= c < NUM_CLASSES]
    if bad:
        raise DataError(f"{path}: Id {row_id} has unknown class index {bad[0]} (expected 0..{NUM_CLASSES - 1})")
    return tuple(labels)


def multi_hot(labels_column, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Sequence of label tuples -> (N, num_classes) uint8 indicator matrix."""
    out = np.zeros((len(labels_column), num_classes), np.uint8)
    for i, labels in enumerate(labels_column):
        out[i, list(labels)] = 1
    return out


def read_image(folder, image_id: str, *, size: int = 0) -> np.ndarray:
    """Reads `{folder}/{image_id}_{red,green,blue,yellow}.png` into uint8 (H, W, 4), R,G,B,Y.

    `size` > 0 resizes each channel to size x size with antialiasing (PIL's Lanczos filter).
    """
    folder = pathlib.Path(folder)
    planes, shape = [], None
    for color in CHANNELS:
        path = folder / f"{image_id}_{color}.png"
        try:
            with Image.open(path) as img:
                img.load()
        except FileNotFoundError:
            raise DataError(f"{path}: missing {color} channel file") from None
        except (OSError, SyntaxError) as e:
            raise DataError(f"{path}: cannot decode PNG ({e})") from None
        if img.mode != "L":
            raise DataError(f"{path}: expected an 8-bit grayscale PNG, got PIL mode {img.mode}")
        shape = shape or img.size
        if img.size != shape:
            raise DataError(f"{path}: size {img.size[0]}x{img.size[1]} differs from the red channel's "
                            f"{shape[0]}x{shape[1]}")
        if size and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        planes.append(np.asarray(img, np.uint8))
    return np.stack(planes, axis=-1)
