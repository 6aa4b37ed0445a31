"""Training sets combined from several sources, e.g. the Kaggle PNGs and the HPAv18 JPEGs the
paper added to them: which folders, formats and label files, and their union.

`data.sources` lists the sources as strings `NAME=FORMAT:IMAGES[:CSV]`:

| part | what |
|---|---|
| `NAME` | a short name (letters, digits, `_`, `-`), written to `folds.csv` for every row of that source |
| `FORMAT` | `png` (Kaggle), `tif` (full-size originals) or `jpg` (HPAv18), as `data.format` |
| `IMAGES` | the folder of its `{Id}_{color}.{ext}` files |
| `CSV` | its `Id,Target` label file; default `IMAGES.csv` (`train` -> `train.csv`) |

Relative paths are relative to `data.dir`, which still holds the test images (`test/`,
`sample_submission.csv`). An empty `data.sources` is the one source `kaggle=FORMAT:train:train.csv`
with `data.format`, what `data.dir` alone always meant.

The union's rows are the sources' rows in the order listed, each source in its CSV's order; so
the first-listed source comes first wherever "first" decides, as in the near-duplicate policy
`drop`, which keeps the first image of each group: list Kaggle first and an HPAv18 image that
duplicates a Kaggle one is the one dropped, as the paper did. An Id may appear in one source only
(a packed store and the prediction files key images by Id).
"""

import dataclasses
import pathlib
import re

import numpy as np

from hpa_jax.data import kaggle
from hpa_jax.data.sources import FORMATS
from hpa_jax.errors import ConfigError, DataError

SOURCES_HELP = ("A training source NAME=FORMAT:IMAGES[:CSV] (paths relative to --data_dir), repeated for several, "
                "as data.sources lists them, e.g. --sources=kaggle=png:train --sources=hpav18=jpg:hpav18:HPAv18.csv.")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclasses.dataclass(frozen=True)
class Source:
    """One source of training images: its name, channel-file format, image folder and label CSV."""

    name: str
    fmt: str
    images: pathlib.Path
    csv: pathlib.Path

    def __str__(self) -> str:
        return f"{self.name} ({self.fmt}: {self.images}, labels {self.csv})"


def parse_source(spec: str, base=None) -> Source:
    """`NAME=FORMAT:IMAGES[:CSV]` -> a `Source`, relative paths taken from `base` (see the module doc)."""
    name, eq, rest = str(spec).partition("=")
    parts = rest.split(":") if eq else []
    if not eq or len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"data.sources entry {spec!r} is not NAME=FORMAT:IMAGES[:CSV] "
                          f"(e.g. 'hpav18=jpg:hpav18:HPAv18RBGY_wodpl.csv')")
    if not _NAME.match(name):
        raise ConfigError(f"data.sources entry {spec!r}: the name {name!r} may hold only letters, digits, _ and -")
    fmt, images = parts[0], parts[1]
    if fmt not in FORMATS:
        raise ConfigError(f"data.sources entry {spec!r}: unknown format {fmt!r}, expected one of {', '.join(FORMATS)}")
    csv = parts[2] if len(parts) == 3 else images.rstrip("/") + ".csv"
    root = pathlib.Path(base).expanduser() if base else pathlib.Path()
    return Source(name, fmt, root / pathlib.Path(images).expanduser(), root / pathlib.Path(csv).expanduser())


def parse_sources(specs, base=None, default_format: str = "png") -> tuple[Source, ...]:
    """`data.sources` (a string or a sequence of them) -> Sources with unique names; empty -> the
    Kaggle layout of `base` in `default_format`."""
    if isinstance(specs, str):
        specs = (specs,)
    specs = tuple(specs or ())
    if not specs:
        specs = (f"kaggle={default_format}:train:train.csv",)
    parsed = tuple(parse_source(s, base) for s in specs)
    names = [s.name for s in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"data.sources: the name {repeated[0]!r} is given to more than one source")
    return parsed


def sources_from_config(data_config, root) -> tuple[Source, ...]:
    """The training sources of a config, relative paths under the dataset folder `root`; more than
    one needs `data.image_size` to bring every image to one size (Kaggle's 512 px PNGs, HPAv18's
    1728-2048 px JPEGs)."""
    parsed = parse_sources(data_config.sources, root, data_config.format)
    if len(parsed) > 1 and not data_config.image_size:
        raise ConfigError(f"data.sources combines {len(parsed)} sources ({', '.join(s.name for s in parsed)}), whose "
                          f"images may differ in size: set data.image_size (e.g. 512) to resize them all to one size")
    return parsed


@dataclasses.dataclass(frozen=True)
class Union:
    """The labelled rows of every source, in order: `source[i]` is the index of row i's source."""

    sources: tuple[Source, ...]
    ids: np.ndarray        # (N,) str
    labels: np.ndarray     # (N, C) uint8
    source: np.ndarray     # (N,) int16, index into sources

    @property
    def source_names(self) -> np.ndarray:
        return np.asarray([s.name for s in self.sources])[self.source]

    def rows_of(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.source == k)

    def counts(self) -> dict[str, int]:
        return {s.name: int((self.source == k).sum()) for k, s in enumerate(self.sources)}


def read_union(sources, num_classes: int) -> Union:
    """Reads and checks each source's label CSV (`kaggle.read_labels_csv`: a one-line error naming
    the file at its first problem) and joins them; an Id in two sources is an error naming both."""
    ids, labels, which = [], [], []
    for k, source in enumerate(sources):
        frame = kaggle.read_labels_csv(source.csv)
        source_ids = frame["Id"].to_numpy()
        ids.append(source_ids)
        labels.append(kaggle.multi_hot(frame["labels"], num_classes))
        which.append(np.full(len(source_ids), k, np.int16))
    for image_id, first, k in ids_in_two_sources(ids):
        raise DataError(f"{sources[k].csv}: Id {image_id} is also in {sources[first].csv} (source "
                        f"{sources[first].name}): an Id may be in one source only")
    return Union(tuple(sources), np.concatenate(ids), np.concatenate(labels), np.concatenate(which))


def ids_in_two_sources(id_lists):
    """Yields (Id, the first source it is in, a later source it is in again) over each source's Ids
    (one list per source, in order); training and `data.check` refuse such Ids."""
    owner = {}
    for k, source_ids in enumerate(id_lists):
        for image_id in dict.fromkeys(source_ids):
            first = owner.setdefault(image_id, k)
            if first != k:
                yield image_id, first, k

