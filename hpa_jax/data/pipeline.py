"""grain input pipelines: uint8 crops leave the host; the dihedral transform and the
normalisation happen on the device.

Sending uint8 instead of float32 quarters host-to-device traffic, which is what starves a
GPU first at 512-1024 px with four channels. A grain element is a whole batch: its crops are
copied once, straight out of the decoded image or the packed store's memory map, into the
batch; the D4 transform (a transpose and flips, which on the host would be a second, strided
copy of every image) is a per-image code that the jitted train step applies (`dihedral`).
"""

import concurrent.futures
import dataclasses
import os
import pathlib
import signal
import sys
import threading
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np

from hpa_jax.data.sources import DEFAULT_RESAMPLE, read_sample
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
    resample: str = DEFAULT_RESAMPLE
    depth16: str = "linear"

    @classmethod
    def from_config(cls, data_config, folder, ids, labels, fmt: str | None = None) -> "ImageSource":
        """The source with the config's reader rules; `fmt` overrides `data.format` (a source of `data.sources`)."""
        return cls(pathlib.Path(folder), np.asarray(ids), np.asarray(labels), data_config.image_size,
                   fmt or data_config.format, data_config.yellow, data_config.resample, data_config.depth16)

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> np.ndarray:
        """Row `index`'s (H, W, 4) uint8 image, decoded."""
        return read_sample(self.folder, self.ids[int(index)], fmt=self.fmt, size=self.image_size, yellow=self.yellow,
                           resample=self.resample, depth16=self.depth16)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"image": self.image(index), "labels": self.labels[index], "index": np.int32(index)}


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

    def image(self, index: int) -> np.ndarray:
        index = int(index)
        return self.parts[self.part[index]].image(self.within[index])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"image": self.image(index), "labels": self.labels[index], "index": np.int32(index)}


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
        """The store's images for `ids`; a one-line error when it was packed at another size or with
        other reader rules than the config's (`pack.check_rules`)."""
        from hpa_jax.data import pack  # noqa: PLC0415

        source = cls(store, ids, labels, image_size=data_config.image_size)
        pack.check_rules(source.store, source.meta, data_config)
        return source

    @property
    def images(self) -> np.ndarray:
        """The store's (N, S, S, 4) uint8 array, memory-mapped read-only."""
        if self._images is None:
            with file_errors(self.images_file):
                # a plain ndarray view of the map: indexing a np.memmap runs Python code per call
                self._images = np.asarray(np.load(self.images_file, mmap_mode="r"))
        return self._images

    def __getstate__(self):
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, index: int) -> np.ndarray:
        """Row `index`'s (S, S, 4) image: a read-only view into the memory map, nothing copied yet."""
        return self.images[self.rows[int(index)]]

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        return {"image": np.array(self.image(index)), "labels": self.labels[index], "index": np.int32(index)}


# ---- the D4 transform -------------------------------------------------------------------------

# Code k of a batch's "d4": np.rot90(image, k % 4), then a left-right flip when k >= 4. As the
# transpose T, the up-down flip F_H and the left-right flip F_W, applied in that order:
D4_STEPS = np.array([(0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1),     # rotations by 0, 90, 180, 270 degrees
                     (0, 0, 1), (1, 1, 1), (0, 1, 0), (1, 0, 0)],    # the same, then flipped left-right
                    np.bool_)


def dihedral(images: jnp.ndarray, codes: jnp.ndarray) -> jnp.ndarray:
    """(B, S, S, C) square images, each under its own dihedral transform `codes[i]` in 0..7 (see
    `D4_STEPS`). Three selects between whole-batch views: per image, it moves each pixel once,
    on the device where the batch already is; the batch axis stays where it was sharded."""
    steps = jnp.asarray(D4_STEPS)[codes.astype(jnp.int32)]

    def where(bit, changed, x):
        return jnp.where(steps[:, bit, None, None, None], changed, x)

    images = where(0, images.swapaxes(1, 2), images)
    images = where(1, images[:, ::-1], images)
    return where(2, images[:, :, ::-1], images)


# ---- training batches -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """An epoch's order and augmentation, a pure function of (seed, epoch): position j of the
    epoch trains on example `order[j]`, cut at `corner[j]` (top and left as fractions of the
    free range, so any image size takes the same draw) under the D4 transform `d4[j]`."""
    order: np.ndarray     # (N,) int64
    corner: np.ndarray    # (N, 2) float64 in [0, 1)
    d4: np.ndarray        # (N,) uint8 in 0..7

    @classmethod
    def of(cls, num_examples: int, seed: int, epoch: int) -> "EpochPlan":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
        return cls(rng.permutation(num_examples), rng.random((num_examples, 2)),
                   rng.integers(0, 8, num_examples, dtype=np.uint8))


def crop_at(image: np.ndarray, corner, crop_size: int) -> np.ndarray:
    """The `crop_size` square of `image` whose top-left corner is at the fractions `corner` of
    the free range (a view: nothing is copied)."""
    h, w = image.shape[:2]
    crop = min(crop_size, h, w)
    top, left = int(corner[0] * (h - crop + 1)), int(corner[1] * (w - crop + 1))
    return image[top:top + crop, left:left + crop]


class BatchBuffers:
    """Reused batch arrays: a new 32 MiB array is new memory, which the kernel must map and zero
    page by page on first touch, as costly as the copy into it; an array of this pool is reused
    once nothing but the pool refers to it (the consumer, grain's buffers and a pending transfer
    to the device each hold a reference while they need it). At most `keep` arrays are kept."""

    def __init__(self, keep: int = 16):
        self.keep, self._arrays, self._lock = keep, [], threading.Lock()

    def __getstate__(self):   # each reader process has its own
        return {"keep": self.keep}

    def __setstate__(self, state):
        self.__init__(state["keep"])

    def fill(self, parts, dtype=np.uint8) -> np.ndarray:
        """One array of the equal-shaped `parts` stacked, each copied once."""
        shape = (len(parts), *np.shape(parts[0]))
        with self._lock:
            # referred to by the pool's list, this loop and getrefcount's argument only: free
            out = next((a for a in self._arrays if a.shape == shape and sys.getrefcount(a) <= 3), None)
            if out is None:
                out = np.empty(shape, dtype)
                if len(self._arrays) < self.keep:
                    self._arrays.append(out)
        for row, part in enumerate(parts):
            out[row] = part
        return out


class _EpochBatches:
    """Element k of a run's training dataset -> this process's share of a global batch: the
    crops copied once into one (B/P, c, c, 4) array, with their labels, source rows and D4 codes.

    The elements run through epochs `first_epoch`, `first_epoch` + 1, ...; the first starts at
    global batch `start_batch`. Global batch b of an epoch is the epoch positions [bB, (b+1)B),
    of which process p takes [bB + pB/P, bB + (p+1)B/P)."""

    def __init__(self, source, *, batch_size, crop_size, seed, first_epoch, start_batch, num_batches, process_index,
                 process_count):
        self.source, self.crop_size, self.seed = source, int(crop_size), int(seed)
        self.local = batch_size // process_count
        self.first_epoch, self.start_batch, self.num_batches = int(first_epoch), int(start_batch), int(num_batches)
        self.offset = process_index * self.local
        self.batch_size = int(batch_size)
        self.buffers = BatchBuffers()
        self._plans = {}

    def __getstate__(self):   # plans are remade in each worker process, not pickled
        return {**self.__dict__, "_plans": {}}

    def locate(self, k: int) -> tuple[int, int]:
        """(epoch, global batch) of element k."""
        k += self.start_batch
        return self.first_epoch + k // self.num_batches, k % self.num_batches

    def plan(self, epoch: int) -> EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            plan = EpochPlan.of(len(self.source), self.seed, epoch)
            self._plans = {epoch: plan, **{e: p for e, p in self._plans.items() if e == epoch - 1}}
        return plan

    def __call__(self, k) -> dict:
        epoch, b = self.locate(int(k))
        plan = self.plan(epoch)
        positions = slice(b * self.batch_size + self.offset, b * self.batch_size + self.offset + self.local)
        rows = plan.order[positions]
        images = self.buffers.fill([crop_at(self.source.image(row), corner, self.crop_size)
                                    for row, corner in zip(rows, plan.corner[positions])])
        return {"image": images, "labels": self.source.labels[rows], "index": rows.astype(np.int32),
                "d4": plan.d4[positions]}


def _let_grain_read_its_flag() -> None:
    """grain reads its absl flag `grain_enable_multiprocess_worker_profiling` when it starts worker
    processes, which raises in a caller that is not an absl app (tests, notebooks): there the flag
    is given its default, as parsing would; nothing else of absl's state is touched. Command lines
    have parsed it already."""
    from absl import flags  # noqa: PLC0415

    flag = flags.FLAGS["grain_enable_multiprocess_worker_profiling"]
    if not flags.FLAGS.is_parsed() and not flag.present:
        flag.parse(flag.default)


def read_ordered(dataset: grain.MapDataset, num_threads: int, prefetch: int, num_workers: int) -> grain.DatasetIterator:
    """`dataset`'s elements in order, made by `num_threads` threads in each of `num_workers`
    reader processes (0: in this one). At least one element a thread is kept in flight, so that
    every thread has work (grain warns when the buffer is smaller than the threads)."""
    if num_workers < 0:
        raise ConfigError(f"data.num_workers must be 0 (threads only) or a number of processes, got {num_workers}")
    num_threads = max(int(num_threads), 1)
    ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=max(int(prefetch), num_threads)))
    if num_workers > 0:
        _let_grain_read_its_flag()
        per_worker = max(1, -(-int(prefetch) // num_workers))   # about `prefetch` batches ready in all
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=per_worker),
                            worker_init_fn=_leave_signals_to_the_trainer)
    return iter(ds)


def train_batches(source: ImageSource | PackedSource, *, batch_size: int, crop_size: int, seed: int, epoch: int,
                  num_threads: int = 8, prefetch: int = 4, num_workers: int = 0, start_batch: int = 0,
                  process_index: int = 0, process_count: int = 1, max_batches: int = 0,
                  num_epochs: int = 1) -> grain.DatasetIterator:
    """`num_epochs` epochs from `epoch` on, of shuffled, augmented, full global batches of
    `batch_size`, from batch `start_batch` of the first; this process's share of each: rows
    [p * B/P, (p + 1) * B/P) for process p of P. `max_batches` > 0 ends every epoch after that many
    batches (the first of the same order). A batch is {"image": uint8 crops, "labels", "index":
    source rows, "d4": the D4 code of each crop, which the train step applies (`dihedral`)}.

    An epoch's order and crops are a pure function of (seed, epoch) (`EpochPlan`), and every
    batch a pure function of (seed, epoch, batch index): so 1 process and P processes train on
    the same global batches, and a resumed epoch starts at any batch, whatever the process count
    it was saved with.

    A grain element is a batch, so `num_threads` threads make that many batches at once.
    `num_workers` > 0 makes them in that many reader processes (each with `num_threads`
    threads), which decoding on many cores needs; grain gives worker w the batches w, w + N, ...
    and takes their outputs round-robin, so the batches do not depend on N. One iterator of
    several epochs keeps its reader processes for all of them.

    The iterator's `get_state()` is a JSON-serialisable record of how far it got; `set_state` on a
    fresh iterator of the same arguments continues from there. `close()` it to stop the workers.
    """
    num_batches = steps_per_epoch(len(source), batch_size, max_batches)
    total = max(num_batches * int(num_epochs) - int(start_batch), 0) if num_batches else 0
    make = _EpochBatches(source, batch_size=batch_size, crop_size=crop_size, seed=seed, first_epoch=epoch,
                         start_batch=start_batch, num_batches=max(num_batches, 1), process_index=process_index,
                         process_count=process_count)
    return read_ordered(grain.MapDataset.range(total).map(make), num_threads, prefetch, num_workers)


def train_batches_from_config(config, source: ImageSource | PackedSource, *, epoch: int, start_batch: int = 0,
                              num_epochs: int = 1) -> grain.DatasetIterator:
    """`train_batches` as a run's `config` sets it up (`train.batch_size`, `data.crop_size`, `seed`,
    the readers (`readers`), `train.steps_per_epoch`), for this process's share."""
    num_threads, num_workers, prefetch = readers(config.data, source)
    return train_batches(source, batch_size=config.train.batch_size, crop_size=config.data.crop_size, seed=config.seed,
                         epoch=epoch, num_threads=num_threads, prefetch=prefetch, num_workers=num_workers,
                         start_batch=start_batch, process_index=jax.process_index(),
                         process_count=jax.process_count(), max_batches=config.train.steps_per_epoch,
                         num_epochs=num_epochs)


def _leave_signals_to_the_trainer(worker_index: int, worker_count: int) -> None:
    """In each reader process: a Ctrl-C (sent to the whole process group) or a SIGTERM sent to all
    of a job's processes must not kill the readers while training finishes its step and saves the
    data position; the training process stops them (`close()`) itself."""
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---- evaluation batches -----------------------------------------------------------------------

class _EvalBatch:
    """Element k -> this process's rows of global batch k % num_batches (pass k // num_batches),
    every image whole, in order."""

    def __init__(self, source, batch_size: int, process_index: int, process_count: int, num_batches: int):
        self.source, self.batch_size, self.num_batches = source, int(batch_size), max(int(num_batches), 1)
        self.local = self.batch_size // process_count
        self.offset = process_index * self.local
        self.buffers = BatchBuffers()

    def __call__(self, k) -> dict:
        n = len(self.source)
        positions = int(k) % self.num_batches * self.batch_size + self.offset + np.arange(self.local)
        rows = np.minimum(positions, n - 1)    # padding repeats the last image: its predictions are dropped
        return {"image": self.buffers.fill([self.source.image(row) for row in rows]), "labels": self.source.labels[rows],
                "index": rows.astype(np.int32), "mask": positions < n}


def eval_batches(source: ImageSource | PackedSource, *, batch_size: int, num_threads: int = 8, prefetch: int = 4,
                 process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                 num_passes: int = 1) -> grain.DatasetIterator:
    """Every image once, in order, in global batches of `batch_size` (the last padded), this
    process's rows [p * B/P, (p + 1) * B/P) of each; `mask` marks its real rows. Padding rows
    repeat the last image (any image will do: their predictions are dropped). Read as training
    reads: a batch a thread, `num_workers` reader processes. `num_passes` passes over the set
    follow each other in one iterator (`eval_batch_count` batches each): a run's validations
    share its reader processes instead of starting new ones each epoch."""
    num_batches = eval_batch_count(len(source), batch_size)
    make = _EvalBatch(source, batch_size, process_index, process_count, num_batches)
    total = num_batches * max(int(num_passes), 0)
    return read_ordered(grain.MapDataset.range(total).map(make), num_threads, prefetch, num_workers)


def eval_batch_count(num_examples: int, batch_size: int) -> int:
    """Batches in one pass of `eval_batches` over `num_examples` images (the last padded)."""
    return -(-int(num_examples) // int(batch_size))


# ---- readers sized to the host ----------------------------------------------------------------

AUTO = "auto"


def host_cpus() -> int:
    """The CPUs this process may run on (a cluster job's share, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def readers(data_config, source) -> tuple[int, int, int]:
    """(threads per reader process, reader processes, batches prefetched) for reading `source`,
    from `data.num_threads`, `data.num_workers` and `data.prefetch`; "auto" sizes them to the host.

    - A packed store is a memory copy, at thousands of images/s a thread, and numpy copies run
      outside the GIL: threads alone, one a CPU up to 8 (more would only contend for memory
      bandwidth); no reader processes, which would add their start-up and a pickling of each
      batch.
    - Decoding is ~100x slower and half of it holds the GIL: on more than 2 CPUs, a reader
      process per CPU but one (left to the training loop), 2 threads each; on 1-2 CPUs, threads
      only, one a CPU.
    Prefetch is never below the threads (every thread needs a batch to work on).
    """
    cpus = host_cpus()
    packed = isinstance(source, PackedSource)
    workers = data_config.num_workers
    if workers == AUTO:
        workers = 0 if packed or cpus <= 2 else cpus - 1
    threads = data_config.num_threads
    if threads == AUTO:
        threads = min(cpus, 8) if packed or not workers else 2
    return int(threads), int(workers), max(int(data_config.prefetch), int(threads))


def decoding_threads(data_config) -> int:
    """Threads for a tool that decodes in this process only (hashing for duplicates): `data.num_threads`,
    or with "auto" one a CPU."""
    return host_cpus() if data_config.num_threads == AUTO else int(data_config.num_threads)


def reader_images_per_second(batches, max_seconds: float = 5.0, warmup: int = 1) -> tuple[float, int]:
    """(images/s, images timed) of an iterator of batches (`train_batches`, `eval_batches`), after
    `warmup` batches (reader start-up, the files into the page cache), for at most `max_seconds`
    or until it ends; the iterator is closed."""
    try:
        for _ in range(warmup):
            if next(batches, None) is None:
                return float("nan"), 0
        start, images = time.perf_counter(), 0
        for batch in batches:
            images += len(batch["image"])
            if time.perf_counter() - start > max_seconds:
                break
        elapsed = time.perf_counter() - start
        return (images / elapsed if images else float("nan")), images
    finally:
        batches.close()


def steps_per_epoch(num_examples: int, batch_size: int, max_batches: int = 0) -> int:
    """Full batches in an epoch, at most `max_batches` when that is > 0 (`train.steps_per_epoch`)."""
    full = num_examples // batch_size
    return min(full, int(max_batches)) if max_batches and int(max_batches) > 0 else full


def normalize(images: jnp.ndarray, mean, std) -> jnp.ndarray:
    """uint8 (B, H, W, C) -> float32 standardised per channel, with mean/std given on [0, 1]."""
    mean = jnp.asarray(mean, jnp.float32) * 255.0
    std = jnp.asarray(std, jnp.float32) * 255.0
    return (images.astype(jnp.float32) - mean) / std


def copy_limit(images: np.ndarray, crop: int, seconds: float, threads: int = 1) -> float:
    """Images/s of copying only a `crop` square of each stored image out of the memory map in a
    plain loop (no transform, no batching, nothing else), in each of `threads` threads, each into
    its own reused buffer: what no reader of the store can beat."""
    n, size = images.shape[:2]

    def loop(seed):
        rng = np.random.default_rng(seed)
        out = np.empty((crop, crop, images.shape[3]), np.uint8)
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for i in range(n):
                top, left = rng.integers(0, size - crop + 1, 2)
                np.copyto(out, images[i, top:top + crop, left:left + crop])
            done += n
        return done / (time.perf_counter() - start)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(loop, range(threads)))
