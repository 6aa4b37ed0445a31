"""grain input pipelines: uint8 images leave the host, normalisation happens on the device.

Sending uint8 instead of float32 quarters host-to-device traffic, which is what starves a
GPU first at 512-1024 px with four channels.
"""

import dataclasses
import functools
import pathlib
import signal
import statistics
import time
from typing import Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np

from hpa_jax.data.sources import read_sample
from hpa_jax.errors import ConfigError, DataError, file_errors


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """grain random-access source over one image folder: index -> {image, labels, index}.

    The reader options are those of `sources.read_sample` (`data.format`, `data.yellow`, ...).
    """

    folder: pathlib.Path
    ids: np.ndarray
    labels: np.ndarray           # (N, C) uint8; zeros for unlabelled (test) images
    image_size: int = 0
    fmt: str = "png"
    yellow: str = "mean_rg"
    resample: str = "lanczos"
    depth16: str = "linear"

    @classmethod
    def from_config(cls, data_config, folder, ids, labels, fmt: str | None = None) -> "ImageSource":
        """The source with the config's reader rules; `fmt` overrides `data.format` (a source of `data.sources`)."""
        return cls(pathlib.Path(folder), np.asarray(ids), np.asarray(labels), data_config.image_size,
                   fmt or data_config.format, data_config.yellow, data_config.resample, data_config.depth16)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        image = read_sample(self.folder, self.ids[index], fmt=self.fmt, size=self.image_size, yellow=self.yellow,
                            resample=self.resample, depth16=self.depth16)
        return {"image": image, "labels": self.labels[index], "index": np.int32(index)}


class MixedSource:
    """grain random-access source whose rows come from several `ImageSource`s (a training set of
    `data.sources`, e.g. Kaggle PNGs and HPAv18 JPEGs): row i is row `within[i]` of `parts[part[i]]`,
    with its `index` i, as one folder's source would give it."""

    def __init__(self, parts, part, within):
        self.parts = tuple(parts)
        self.part = np.asarray(part, np.int64)
        self.within = np.asarray(within, np.int64)
        first = self.parts[0]
        self.ids = np.empty(len(self.part), object)
        self.labels = np.zeros((len(self.part), first.labels.shape[1]), first.labels.dtype)
        for p, source in enumerate(self.parts):
            mine = self.part == p
            self.ids[mine] = source.ids[self.within[mine]]
            self.labels[mine] = source.labels[self.within[mine]]
        self.ids = self.ids.astype(str)

    @classmethod
    def from_rows(cls, make_part, source_of_row: np.ndarray) -> "MixedSource":
        """`source_of_row[i]`: the source of row i; `make_part(k, positions)` builds the `ImageSource`
        of source k's rows at those positions, in order."""
        source_of_row = np.asarray(source_of_row)
        kinds = np.unique(source_of_row)
        part = np.searchsorted(kinds, source_of_row)
        within = np.zeros(len(source_of_row), np.int64)
        parts = []
        for p, k in enumerate(kinds):
            positions = np.flatnonzero(part == p)
            within[positions] = np.arange(len(positions))
            parts.append(make_part(int(k), positions))
        return cls(parts, part, within)

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        example = self.parts[self.part[index]][self.within[index]]
        return {**example, "index": np.int32(index)}


class PackedSource:
    """grain random-access source over a packed store (`python -m hpa_jax.data.pack`): the same
    {image, labels, index} as `ImageSource`, read from a memory-mapped uint8 array, no decoding.

    `ids` are looked up in the store's index (any order, repeats allowed); a `DataError` names the
    Ids the store does not have. The array is opened lazily in each process, so the source pickles
    small (for grain worker processes).
    """

    def __init__(self, store, ids, labels, *, image_size: int = 0):
        from hpa_jax.data import pack  # noqa: PLC0415 - pandas and the CLI are only needed here

        self.store = pathlib.Path(store).expanduser()
        self.meta = pack.read_meta(self.store)
        self.ids = np.asarray(ids)
        self.labels = np.asarray(labels)
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.labels)} label rows")
        if image_size and image_size != self.meta["size"]:
            raise ConfigError(f"{self.store}: packed at {self.meta['size']} px but data.image_size is {image_size}: "
                              f"repack with --size={image_size} or set data.image_size=0")
        import pandas as pd  # noqa: PLC0415

        with file_errors(self.store / pack.INDEX):
            index = pd.read_csv(self.store / pack.INDEX, dtype=str, keep_default_na=False)["Id"]
        rows = pd.Index(index).get_indexer(pd.Index(self.ids.astype(str)))
        if (rows < 0).any():
            missing = self.ids[rows < 0]
            shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{self.store}: {len(missing)} Id(s) not in the packed store: {shown} (repack it from "
                            f"the same CSV)")
        self.rows = rows.astype(np.int64)
        self.image_size = int(self.meta["size"])
        self.images_file = self.store / pack.IMAGES
        self._images = None
        self.images    # a truncated or foreign images file fails here, named, not in a reader thread

    @classmethod
    def from_config(cls, data_config, store, ids, labels) -> "PackedSource":
        return cls(store, ids, labels, image_size=data_config.image_size)

    @property
    def images(self) -> np.ndarray:
        """The store's (N, S, S, 4) uint8 array, memory-mapped read-only."""
        if self._images is None:
            with file_errors(self.images_file):
                self._images = np.load(self.images_file, mmap_mode="r")
        return self._images

    def __getstate__(self):
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        image = np.array(self.images[self.rows[index]])  # a copy in memory, as ImageSource's decoded image
        return {"image": image, "labels": self.labels[index], "index": np.int32(index)}


def random_crop_d4(example: dict, rng: np.random.Generator, crop_size: int) -> dict:
    """A random crop_size square crop and one of the 8 dihedral transforms (flips and
    90-degree rotations): microscopy fields have no preferred orientation."""
    image = example["image"]
    h, w = image.shape[:2]
    crop = min(crop_size, h, w)
    top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    image = np.rot90(image[top:top + crop, left:left + crop], k=int(rng.integers(4)))
    if rng.integers(2):
        image = image[:, ::-1]
    return {**example, "image": np.ascontiguousarray(image)}


def reader_images_per_second(get, n: int, crop_size: int, passes: int = 1, seed: int = 0) -> float:
    """What one reader worker delivers: images per second of `get(i)` (an example, e.g. `source[i]`)
    then `random_crop_d4`, for i in 0..n-1 in one thread, no grain; one untimed pass first (imports,
    and the files into the page cache: this times decoding, not the disk), then the median of
    `passes` timed passes. Grain's threads and worker processes multiply it by up to the cores
    free for them; `--mode=plan` divides a train step's images per second by it."""
    rng = np.random.default_rng(seed)

    def one_pass() -> float:
        start = time.perf_counter()
        for i in range(n):
            random_crop_d4(get(i), rng, crop_size)
        return time.perf_counter() - start

    one_pass()
    return n / statistics.median(one_pass() for _ in range(max(passes, 1)))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _let_grain_read_its_flag() -> None:
    """grain reads its absl flag `grain_enable_multiprocess_worker_profiling` when it starts worker
    processes, which raises in a caller that is not an absl app (tests, notebooks): there the flag
    is given its default, as parsing would; nothing else of absl's state is touched. Command lines
    have parsed it already."""
    from absl import flags  # noqa: PLC0415

    flag = flags.FLAGS["grain_enable_multiprocess_worker_profiling"]
    if not flags.FLAGS.is_parsed() and not flag.present:
        flag.parse(flag.default)


def train_batches(source: ImageSource | PackedSource, *, batch_size: int, crop_size: int, seed: int, epoch: int,
                  num_threads: int = 8, prefetch: int = 4, num_workers: int = 0, start_batch: int = 0,
                  process_index: int = 0, process_count: int = 1, max_batches: int = 0) -> grain.DatasetIterator:
    """One epoch of shuffled, augmented, full global batches of `batch_size`, from `start_batch` on;
    this process's share of each: rows [p * B/P, (p + 1) * B/P) for process p of P. `max_batches`
    > 0 ends the epoch after that many batches (the first of the same order).

    The epoch's global order and crops are a pure function of (seed, epoch): the examples are
    shuffled and augmented (each crop seeded by its position), then cut into chunks of B/P, of
    which global batch b is chunks bP .. bP + P - 1 and process p takes chunk bP + p. So 1
    process and P processes train on the same global batches, and a resumed epoch starts at
    any batch, whatever the process count it was saved with.

    `num_workers` > 0 reads in that many worker processes (each with `num_threads` threads), which
    decoding PNGs on many cores needs: the GIL caps threads. grain slices the batched dataset among
    the workers (worker w makes batches w, w + N, ...) and takes their outputs round-robin, and
    every batch is a pure function of (seed, epoch, batch index), so the order and the crops do
    not depend on N.

    The iterator's `get_state()` is a JSON-serialisable record of how far it got; `set_state` on a
    fresh iterator of the same arguments continues from there. `close()` it to stop the workers.
    """
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be 0 (threads only) or a number of processes, got {num_workers}")
    num_batches = steps_per_epoch(len(source), batch_size, max_batches)
    ds = (grain.MapDataset.source(source)
          .shuffle(seed=_epoch_seed(seed, epoch))
          .random_map(functools.partial(random_crop_d4, crop_size=crop_size), seed=_epoch_seed(seed + 1, epoch))
          .batch(batch_size // process_count, drop_remainder=True))
    ds = ds[start_batch * process_count + process_index:num_batches * process_count:process_count]
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        _let_grain_read_its_flag()
        per_worker = max(1, -(-prefetch // num_workers))   # about `prefetch` batches ready in all
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=per_worker),
                            worker_init_fn=_leave_signals_to_the_trainer)
    return iter(ds)


def train_batches_from_config(config, source: ImageSource | PackedSource, *, epoch: int,
                              start_batch: int = 0) -> grain.DatasetIterator:
    """`train_batches` as a run's `config` sets it up (`train.batch_size`, `data.crop_size`, `seed`,
    the reader threads, workers and prefetch, `train.steps_per_epoch`), for this process's share."""
    return train_batches(source, batch_size=config.train.batch_size, crop_size=config.data.crop_size, seed=config.seed,
                         epoch=epoch, num_threads=config.data.num_threads, prefetch=config.data.prefetch,
                         num_workers=config.data.num_workers, start_batch=start_batch,
                         process_index=jax.process_index(), process_count=jax.process_count(),
                         max_batches=config.train.steps_per_epoch)


def _leave_signals_to_the_trainer(worker_index: int, worker_count: int) -> None:
    """In each reader process: a Ctrl-C (sent to the whole process group) or a SIGTERM sent to all
    of a job's processes must not kill the readers while training finishes its step and saves the
    data position; the training process stops them (`close()`) itself."""
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_batches(source: ImageSource | PackedSource, *, batch_size: int, num_threads: int = 8, prefetch: int = 4,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Every image once, in order, in global batches of `batch_size` (the last padded), this
    process's rows [p * B/P, (p + 1) * B/P) of each; `mask` marks its real rows. Padding rows
    repeat the last image (any image will do: their predictions are dropped)."""
    n = len(source)
    local = batch_size // process_count

    def padded(i):
        return {**source[min(i, n - 1)], "mask": np.bool_(i < n)}

    num_batches = -(-n // batch_size)
    ds = grain.MapDataset.range(num_batches * batch_size).map(padded).batch(local)
    yield from ds[process_index::process_count].to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def steps_per_epoch(num_examples: int, batch_size: int, max_batches: int = 0) -> int:
    """Full batches in an epoch, at most `max_batches` when that is > 0 (`train.steps_per_epoch`)."""
    full = num_examples // batch_size
    return min(full, int(max_batches)) if max_batches and int(max_batches) > 0 else full


def normalize(images: jnp.ndarray, mean, std) -> jnp.ndarray:
    """uint8 (B, H, W, C) -> float32 standardised per channel, with mean/std given on [0, 1]."""
    mean = jnp.asarray(mean, jnp.float32) * 255.0
    std = jnp.asarray(std, jnp.float32) * 255.0
    return (images.astype(jnp.float32) - mean) / std
