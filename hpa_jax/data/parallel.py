"""Reading many files in parallel, in order, with bounded memory: what the data tools (check,
stats, duplicate hashing, pack) do over 31k-105k images.

`ThreadPoolExecutor.map` submits every item at once and keeps every result until it is consumed,
so a consumer slower than the readers (a disk write) lets decoded images pile up with the
dataset's size. grain's threaded reads instead keep at most `buffer` results ahead of the
consumer; a reader's exception (a one-line `DataError` naming the file) reaches the caller as it
was raised.
"""

from typing import Callable, Iterator, Sequence, TypeVar

import grain

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Sequence[T], *, num_threads: int = 4,
                buffer: int = 0) -> Iterator[R]:
    """`fn(item)` for each item, in the items' order, computed by `num_threads` threads at most
    `buffer` (default 2 x threads) items ahead of the consumer. File decoders release the GIL."""
    num_threads = max(1, int(num_threads))
    if not len(items):
        return iter(())
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer or 2 * num_threads)
    return iter(grain.MapDataset.source(items).map(fn).to_iter_dataset(options))
