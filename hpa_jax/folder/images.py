"""A folder of a user's own fields: every `{Id}_{red,green,blue,yellow}.{png,tif,jpg}` set, no CSV.

A biologist's folder mixes formats and sizes (full-size TIFFs, HPAv18 JPEGs, 512 px PNGs), so
the format is found per Id from its files, and each image is read by the same readers as
training (`sources.read_sample`) with the run's `data.*` options. The model sees either the
image resized to the run's input size, as it was trained (`tile=False`), or the image at its own
resolution cut into tiles of that size, overlapping just enough to cover it, whose predictions
the caller averages (`tile=True`: for fields at the training images' magnification but larger).

Problems are collected, never raised one at a time: a missing channel file is found when the
folder is listed, an unreadable one when it is read (`FolderImage.problem`), so that the
command can name every bad Id in one line.
"""

import dataclasses
import pathlib
import re

import numpy as np

from hpa_jax.classes import CHANNELS
from hpa_jax.data.kaggle import DEFAULT_RESAMPLE, resize_uint8
from hpa_jax.data.sources import EXTENSIONS, read_sample
from hpa_jax.errors import DataError

_CHANNEL_FILE = re.compile(r"^(?P<id>.+)_(?P<color>red|green|blue|yellow)\.(?P<ext>png|tif|jpg)$")
_FORMAT_OF = {ext.lstrip("."): fmt for fmt, ext in EXTENSIONS.items()}
PATTERN = "{Id}_{red,green,blue,yellow}.{png,tif,jpg}"


def scan(folder) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """([(Id, format)] of the complete channel sets, by Id; {Id: what is wrong} for the others).

    An Id is complete when its four channel files exist in one format; with four files in two
    formats, or channels split over formats, it is a problem (which files to use is the user's
    choice). Other files are ignored."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (--images names a folder of {PATTERN} files)")
    found: dict[str, dict[str, set]] = {}
    for entry in folder.iterdir():
        match = _CHANNEL_FILE.match(entry.name)
        if match and entry.is_file():
            found.setdefault(match["id"], {}).setdefault(_FORMAT_OF[match["ext"]], set()).add(match["color"])
    if not found:
        raise DataError(f"{folder}: no image files named {PATTERN}")
    good, bad = [], {}
    for image_id in sorted(found):
        by_format = found[image_id]
        complete = [fmt for fmt, colors in by_format.items() if len(colors) == len(CHANNELS)]
        if len(complete) == 1:
            good.append((image_id, complete[0]))
        elif complete:
            bad[image_id] = f"complete {' and '.join(sorted(complete))} sets: keep one"
        else:
            present = set().union(*by_format.values())
            missing = [c for c in CHANNELS if c not in present]
            bad[image_id] = (f"no {'/'.join(missing)} channel file" if missing else
                             "channels in different formats (" + ", ".join(
                                 f"{c}.{EXTENSIONS[f].lstrip('.')}" for c in CHANNELS
                                 for f in sorted(by_format) if c in by_format[f]) + ")")
    return good, bad


def tile_starts(length: int, size: int) -> list[int]:
    """Offsets of the fewest `size` windows that cover `length`, spread evenly (the first at 0,
    the last ending at the edge), so every pixel is seen and overlaps are as equal as possible."""
    if length <= size:
        return [0]
    n = -(-length // size)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


@dataclasses.dataclass
class FolderImage:
    """One image as the model gets it: `tiles` (n, S, S, 4) uint8 and their (top, left) `offsets`
    in `image`, the uint8 (H, W, 4) picture they were cut from (the resized image without
    tiling); or, when it could not be read, `problem` and no tiles."""

    index: int
    image_id: str
    tiles: np.ndarray
    offsets: np.ndarray
    image: np.ndarray
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Random-access source (grain) over the complete sets of `scan`: index -> `FolderImage`.

    `size` is the model's input size; `tile` cuts images larger than it at their own resolution
    (smaller ones are resized to it, one tile). The other fields are `read_sample`'s options,
    the run's `data.format`-independent ones (`data.yellow`, `data.resample`, `data.depth16`)."""

    folder: pathlib.Path
    ids: tuple
    formats: tuple
    size: int
    tile: bool = False
    yellow: str = "mean_rg"
    resample: str = DEFAULT_RESAMPLE
    depth16: str = "linear"

    @classmethod
    def from_config(cls, data_config, folder, sets, *, size: int, tile: bool) -> "FolderSource":
        ids, formats = zip(*sets) if sets else ((), ())
        return cls(pathlib.Path(folder), tuple(ids), tuple(formats), size, tile, data_config.yellow,
                   data_config.resample, data_config.depth16)

    def __len__(self) -> int:
        return len(self.ids)

    def _options(self, index: int) -> dict:
        return dict(fmt=self.formats[index], yellow=self.yellow, resample=self.resample, depth16=self.depth16)

    def original(self, index: int) -> np.ndarray:
        """Image `index` at its own size, (H, W, 4) uint8 (its cells are found and cut there)."""
        return read_sample(self.folder, self.ids[int(index)], size=0, **self._options(int(index)))

    def __getitem__(self, index: int) -> FolderImage:
        index = int(index)
        image_id, size = self.ids[index], self.size
        options = self._options(index)
        try:
            image = read_sample(self.folder, image_id, size=0 if self.tile else size, **options)
        except DataError as e:   # ProblemError: names the file and what is wrong with it
            empty = np.zeros((0, size, size, len(CHANNELS)), np.uint8)
            return FolderImage(index, image_id, empty, np.zeros((0, 2), np.int64), empty[:0], _short(e, self.folder))
        if self.tile and min(image.shape[:2]) < size:
            image = np.stack([resize_uint8(image[..., c], size, self.resample) for c in range(image.shape[-1])], -1)
        starts = [(top, left) for top in tile_starts(image.shape[0], size)
                  for left in tile_starts(image.shape[1], size)]
        tiles = np.stack([image[top:top + size, left:left + size] for top, left in starts])
        return FolderImage(index, image_id, tiles, np.asarray(starts, np.int64), image)


def _short(error: Exception, folder: pathlib.Path) -> str:
    """A reader's `path: detail` message with the path made relative to the folder."""
    return str(error).replace(f"{folder}/", "", 1)


def problems_line(folder, problems: dict[str, str]) -> str:
    """The one-line error naming every bad Id and what is wrong with it."""
    shown = "; ".join(f"{image_id} ({why})" for image_id, why in sorted(problems.items()))
    return (f"{folder}: {len(problems)} image(s) with a missing or unreadable channel: {shown}; nothing was written "
            f"(--skip_bad predicts the others and lists these in skipped.csv)")
