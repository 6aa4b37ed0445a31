"""Command line: `python -m hpa_jax.data.stats --data_dir=D [--subdir=train] [--format=png]
[--limit=N] [--size=0] [--resample=linear] [--sources=NAME=FORMAT:IMAGES[:CSV] ...]`.

Per-channel mean and standard deviation of a folder's images scaled to [0, 1], read exactly as
training reads them (`sources.read_sample`), printed as config lines to paste:

    c.data.mean = (0.0746, 0.0506, 0.0509, 0.0763)
    c.data.std = (0.1228, 0.0857, 0.1299, 0.1194)

Streaming and exact: each image adds its per-channel 256-bin histogram to an int64 (4, 256)
accumulator, so memory does not grow with the dataset and no sum loses precision; mean and
(population, ddof=0) std are computed from the histogram in float64 at the end, two-pass.
Every pixel weighs the same, so with images of different sizes larger images weigh more
(`--size` resizes them all first, as `data.image_size` does in training, by the rule `--resample`:
pass the config's `data.resample`).

`--sources`, repeated, takes the images of several sources together (each folder in its own
format, as `data.sources` lists them; see `hpa_jax.data.combined`), e.g. Kaggle PNGs and HPAv18
JPEGs; pass `--size` then, as training resizes them to `data.image_size`.
"""

import pathlib
import sys
from typing import Iterable

import numpy as np
from absl import app, flags

from hpa_jax import console
from hpa_jax.data import combined, parallel, sources
from hpa_jax.errors import DataError, one_line_errors

PROG = "hpa_jax.data.stats"

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags; defined only when run as a program, so importing this module
    for its functions (tests, other CLIs) registers no absl flags."""
    flags.DEFINE_string("data_dir", None, "Dataset folder.")
    flags.DEFINE_string("subdir", "train", "Image folder, relative to --data_dir.")
    flags.DEFINE_enum("format", "png", sources.FORMATS,
                      "Channel file format: png (Kaggle), tif (full size), jpg (HPAv18).")
    flags.DEFINE_integer("limit", 0, "Use only N images, evenly spaced over the sorted Ids (0: all).")
    flags.DEFINE_integer("size", 0, "Resize every image to size x size first (0: as stored).")
    flags.DEFINE_enum("yellow", "mean_rg", sources.YELLOW_RULES, "HPAv18 JPEG yellow channel rule.")
    flags.DEFINE_enum("resample", sources.DEFAULT_RESAMPLE, sources.RESAMPLE_RULES,
                      "Resize rule with --size (data.resample; see hpa_jax.data.sources).")
    flags.DEFINE_enum("depth16", "linear", sources.DEPTH16_RULES, "16-bit TIFF to 8-bit rule.")
    flags.DEFINE_integer("num_threads", 4, "Threads decoding images.")
    flags.DEFINE_multi_string("sources", [], combined.SOURCES_HELP + " Statistics of all their images together; "
                                             "--subdir and --format are then unused.")
    flags.mark_flag_as_required("data_dir")


class ChannelStats:
    """Streaming per-channel statistics of uint8 (H, W, C) images, scaled to [0, 1]."""

    def __init__(self, channels: int = 4):
        self.histogram = np.zeros((channels, 256), np.int64)
        self.num_images = 0

    @staticmethod
    def image_histogram(image: np.ndarray) -> np.ndarray:
        """(C, 256) pixel counts per channel of one uint8 (H, W, C) image."""
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got {image.dtype}")
        return np.stack([np.bincount(image[..., c].ravel(), minlength=256) for c in range(image.shape[-1])])

    def add_histogram(self, histogram: np.ndarray) -> None:
        """Adds one image's `image_histogram` (computed in a reader thread)."""
        self.histogram += histogram
        self.num_images += 1

    def add(self, image: np.ndarray) -> None:
        self.add_histogram(self.image_histogram(image))

    @property
    def num_pixels(self) -> int:
        return int(self.histogram[0].sum())

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per channel, float64, of the pixel values / 255."""
        if not self.num_pixels:
            raise DataError("no images to compute statistics of")
        values = np.arange(256, dtype=np.float64) / 255.0
        counts = self.histogram.astype(np.float64)
        mean = counts @ values / self.num_pixels
        var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(1) / self.num_pixels
        return mean, np.sqrt(var)


def channel_stats(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per channel of uint8 (H, W, C) images scaled to [0, 1], streamed."""
    stats = None
    for image in images:
        stats = stats or ChannelStats(image.shape[-1])
        stats.add(image)
    if stats is None:
        raise DataError("no images to compute statistics of")
    return stats.mean_std()


def select_ids(ids: list, limit: int) -> list:
    """All Ids, or `limit` of them evenly spaced over the sorted list (deterministic, and spread
    over a folder whose Ids are sorted by antibody or plate)."""
    if not limit or limit >= len(ids):
        return list(ids)
    return [ids[i] for i in np.linspace(0, len(ids) - 1, limit).round().astype(int)]


def folder_stats(folder, *, fmt: str = "png", limit: int = 0, num_threads: int = 4, progress: bool = True,
                 **rules) -> ChannelStats:
    """Statistics of the images in `folder` (Ids from the file names); a `DataError` at the first bad
    image. `rules`: `size` and the reader rules of `sources.read_sample` (`yellow`, `resample`, `depth16`)."""
    folder = pathlib.Path(folder).expanduser()
    return entries_stats(select_ids(folder_entries(folder, fmt), limit), num_threads=num_threads, progress=progress,
                         **rules)


def sources_stats(union, *, limit: int = 0, num_threads: int = 4, progress: bool = True, **rules) -> ChannelStats:
    """Statistics of the images of several sources (`combined.Source`s: each folder's files in
    its own format) together, as `data.sources` trains on them; `limit` spreads over all of them."""
    entries = [e for source in union for e in folder_entries(source.images, source.fmt)]
    return entries_stats(select_ids(entries, limit), num_threads=num_threads, progress=progress, **rules)


def folder_entries(folder: pathlib.Path, fmt: str) -> list[tuple[pathlib.Path, str, str]]:
    """(folder, format, Id) of every image in `folder`, by file name; a `DataError` when there is none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    ids = list(sources.scan_folder(folder, fmt)[0])
    if not ids:
        raise DataError(f"{folder}: no {{Id}}_{{color}}{sources.EXTENSIONS[fmt]} files (wrong --format?)")
    return [(folder, fmt, image_id) for image_id in ids]


def entries_stats(entries, *, size: int = 0, yellow: str = "mean_rg", resample: str = sources.DEFAULT_RESAMPLE,
                  depth16: str = "linear", num_threads: int = 4, progress: bool = True) -> ChannelStats:
    """Streams the images of (folder, format, Id) `entries`, read by `sources.read_sample` with these
    rules, into a `ChannelStats`: memory holds the histograms and a few images being read, however
    many there are."""
    def histogram(entry):
        folder, fmt, image_id = entry
        return ChannelStats.image_histogram(sources.read_sample(folder, image_id, fmt=fmt, size=size, yellow=yellow,
                                                                resample=resample, depth16=depth16))

    from tqdm import tqdm

    stats = ChannelStats()
    for h in tqdm(parallel.ordered_map(histogram, entries, num_threads=num_threads), total=len(entries),
                  desc="reading images", unit="img", disable=not progress, file=sys.stderr):
        stats.add_histogram(h)
    return stats


def config_lines(mean, std, digits: int = 4) -> str:
    def fmt(values):
        return "(" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"

    return f"c.data.mean = {fmt(mean)}\nc.data.std = {fmt(std)}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with one_line_errors(PROG):
        options = dict(limit=FLAGS.limit, size=FLAGS.size, yellow=FLAGS.yellow, resample=FLAGS.resample,
                       depth16=FLAGS.depth16, num_threads=FLAGS.num_threads)
        if FLAGS.sources:
            union = combined.parse_sources(FLAGS.sources, FLAGS.data_dir)
            stats = sources_stats(union, **options)
            where = " + ".join(f"{s.images} ({s.fmt})" for s in union)
        else:
            folder = pathlib.Path(FLAGS.data_dir).expanduser() / FLAGS.subdir
            stats = folder_stats(folder, fmt=FLAGS.format, **options)
            where = f"{folder} ({FLAGS.format})"
        mean, std = stats.mean_std()
    print(f"# {stats.num_images} images in {where}, {stats.num_pixels} pixels per channel, R,G,B,Y scaled to [0, 1]")
    print(config_lines(mean, std), flush=True)


def cli():
    """The `hpa-jax-stats` console script."""
    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
