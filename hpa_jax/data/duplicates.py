"""Near-duplicate images: a perceptual hash of the green (protein) channel, grouped by Hamming distance.

Zhang et al. 2021 removed ~6000 training images that image hashing found to be near-duplicates
(mostly of majority classes); the 2018 3rd place hashed the green channel and instead kept each
group of duplicates in one fold, so that no image is validated against its own copy.

The hash (`phash`) is the usual pHash (what `imagehash.phash` computes), written with numpy:

1. the green plane, as float32 (any bit depth; pHash ignores the intensity scale), resized to
   32 x 32 with PIL's antialiasing Lanczos filter;
2. its 2-D DCT-II (`D @ X @ D.T` with the unnormalised DCT matrix `D[k, n] = 2 cos(pi k (2n+1) / 64)`,
   scipy.fftpack's default), of which the top-left 8 x 8 lowest frequencies are kept (DC included);
3. one bit per coefficient, set where it is above the median of the 64, row-major, the first
   coefficient in the most significant bit: hex(hash) is imagehash's string.

`quantize=True` resizes the plane as 8-bit (PIL mode "L") first, and reproduces `imagehash.phash`
bit for bit on 8-bit images; the default resizes in float32 instead, so the dim green channels
of HPA (often a mean of a few grey levels) do not lose their low frequencies to rounding: on the
101 Kaggle sample images, noised (sigma 2 or 5), gain 1.3, JPEG 75 and half-resolution copies
move the float hash by at most 4 bits, the quantized one by up to 12.
A constant offset (brightness) changes only the DC coefficient and a gain changes none, so both
leave the hash as it is (unless pixels clip at 0 or 255).

`group_duplicates` joins every pair within `max_distance` differing bits, transitively (A ~ B and
B ~ C put A, B, C in one group even when A and C differ more), in tiles of at most 256 x 32,768
pairs, so that the ~480 M pairs of the 31,072 Kaggle images take seconds and memory that does not
grow with their number.

Policies (`data.duplicates`):

* `"none"`: no hashing;
* `"drop"` (the paper): keep the first image of each group in file order, drop the others;
* `"same_fold"` (2018 3rd place): keep every image; folds are assigned to whole groups
  (`folds.stratified_folds(..., groups=groups)`).
"""

import dataclasses
import hashlib
import os
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from hpa_jax.data import parallel, sources
from hpa_jax.errors import ConfigError

POLICIES = ("none", "drop", "same_fold")
# Between the copies of one image (Gaussian noise sigma 5, +10 or +30 grey levels, gain 1.3, JPEG 75,
# half-resolution round trip: <= 4 bits on the 101 Kaggle sample images) and distinct images
# (>= 14 bits there). Distances are even in practice: a hash has 32 of its 64 bits set unless
# coefficients tie at the median.
DEFAULT_MAX_DISTANCE = 6
HASH_SIZE = 8            # 8 x 8 low frequencies -> 64 bits
HIGHFREQ_FACTOR = 4      # resized to 32 x 32 before the DCT
HASH_BITS = HASH_SIZE * HASH_SIZE

_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64))  # MSB first


def dct_matrix(n: int) -> np.ndarray:
    """The unnormalised DCT-II matrix: `dct_matrix(n) @ x` is `scipy.fftpack.dct(x, axis=0)`."""
    k, m = np.arange(n)[:, None], np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * m + 1) / (2 * n))


_DCT_LOW = dct_matrix(HASH_SIZE * HIGHFREQ_FACTOR)[:HASH_SIZE]  # (8, 32): only the low rows are needed


def phash(plane: np.ndarray, *, quantize: bool = False) -> np.uint64:
    """64-bit perceptual hash of a 2-D plane (uint8, uint16 or float); see the module doc."""
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"phash expects a 2-D plane, got shape {plane.shape}")
    size = HASH_SIZE * HIGHFREQ_FACTOR
    if quantize:
        if plane.dtype != np.uint8:
            raise ValueError(f"quantize=True expects a uint8 plane, got {plane.dtype}")
        small = np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.LANCZOS), np.float64)
    else:
        small = np.asarray(Image.fromarray(plane.astype(np.float32)).resize((size, size), Image.Resampling.LANCZOS),
                           np.float64)
    low = _DCT_LOW @ small @ _DCT_LOW.T
    # Round away float noise relative to the DC term, so that a flat image (all AC exactly 0
    # in exact arithmetic) gets one well-defined hash instead of one set by rounding errors.
    low[np.abs(low) <= 1e-9 * (abs(low[0, 0]) + 1.0)] = 0.0
    bits = (low > np.median(low)).ravel()
    return np.uint64(np.bitwise_or.reduce(np.where(bits, _BIT_WEIGHTS, np.uint64(0))))


def hash_to_hex(h) -> str:
    return f"{int(h):016x}"


def hamming(a, b) -> np.ndarray:
    """Number of differing bits between (broadcast) uint64 hashes."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def hash_image_file(folder, image_id: str, *, fmt: str = "png", quantize: bool = False) -> np.uint64:
    """pHash of `{folder}/{image_id}_green.{fmt}` (only the green file is read)."""
    open_plane = sources.plane_opener(fmt)  # checks fmt
    plane = open_plane(pathlib.Path(folder) / f"{image_id}_green{sources.EXTENSIONS[fmt]}", "green")
    return phash(plane, quantize=quantize)


def hash_images(folder, ids: Sequence[str], *, fmt: str = "png", num_threads: int = 8, quantize: bool = False,
                progress: bool = True) -> np.ndarray:
    """(N,) uint64 pHashes of the green channel of each Id in `folder`, in the order of `ids`.

    PNG/TIFF/JPEG decoding releases the GIL, so `num_threads` readers run in parallel. A missing
    or unreadable file raises the reader's one-line `DataError` naming it.
    """
    ids = list(ids)

    def work(image_id):
        return hash_image_file(folder, image_id, fmt=fmt, quantize=quantize)

    out = np.zeros(len(ids), np.uint64)
    bar = tqdm(parallel.ordered_map(work, ids, num_threads=num_threads), total=len(ids), desc="hash green channels",
               unit="img", disable=not progress, dynamic_ncols=True)
    for i, h in enumerate(bar):
        out[i] = h
    return out


def cache_file(cache_dir, folder, *, fmt: str = "png", quantize: bool = False) -> pathlib.Path:
    """A cache CSV for the hashes of one image folder and settings, under `cache_dir` (the data
    folder may be read-only): `{cache_dir}/phash/{parent}_{folder}-{hash of its absolute path}-{fmt}[-q].csv`."""
    folder = pathlib.Path(folder).expanduser().resolve()
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    return pathlib.Path(cache_dir) / "phash" / f"{folder.parent.name}_{folder.name}-{key}-{fmt}{'-q' if quantize else ''}.csv"


def cached_hashes(folder, ids: Sequence[str], cache_path, **kwargs) -> np.ndarray:
    """`hash_images`, keeping the hashes in a CSV (`Id,phash` in hex) at `cache_path`: only Ids
    not yet in it are hashed, and the file is rewritten (atomically) when any were. The cache
    key is the Id alone: use one cache file per image folder and hash settings."""
    cache_path = pathlib.Path(cache_path)
    known = {}
    if cache_path.is_file():
        frame = pd.read_csv(cache_path, dtype=str, keep_default_na=False)
        known = {i: np.uint64(int(h, 16)) for i, h in zip(frame["Id"], frame["phash"])}
    ids = list(ids)
    missing = [i for i in dict.fromkeys(ids) if i not in known]
    if missing:
        known.update(zip(missing, hash_images(folder, missing, **kwargs)))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".tmp{os.getpid()}")
        pd.DataFrame({"Id": list(known), "phash": [hash_to_hex(h) for h in known.values()]}).to_csv(tmp, index=False)
        tmp.replace(cache_path)
    return np.array([known[i] for i in ids], np.uint64)


TILE_COLUMNS = 1 << 15      # columns of one tile of distances: 256 x 32768 uint64 is 64 MiB, whatever N
MERGE_PAIRS = 1 << 21       # close pairs held before they are merged into the groups (32 MiB of indices)


def _distance_tiles(hashes: np.ndarray, block: int, columns: int = TILE_COLUMNS):
    """Yields (row_start, col_start, distances) over the upper triangle of the N x N pairs, in tiles
    of at most `block` x `columns`: the uint8 Hamming distances of rows row_start.. against
    columns col_start.. (col_start >= row_start). In a row block's first tile (col_start ==
    row_start) only the strict upper triangle of its first b columns are pairs; `_pairs_mask`
    masks it. Memory is one tile, not one row block of N."""
    n = len(hashes)
    columns = max(int(columns), block)
    xor = np.empty((min(block, n), min(columns, n)), np.uint64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        for col in range(start, n, columns):
            out = xor[:stop - start, :min(col + columns, n) - col]
            np.bitwise_xor(hashes[start:stop, None], hashes[None, col:col + out.shape[1]], out=out)
            yield start, col, np.bitwise_count(out)


def _num_tiles(n: int, block: int, columns: int = TILE_COLUMNS) -> int:
    columns = max(int(columns), block)
    return sum(-(-(n - start) // columns) for start in range(0, n, block))


def _pairs_mask(dist: np.ndarray, start: int, col: int) -> np.ndarray:
    """True where a tile's entry is a pair i < j (all of it, but for the diagonal square of a row
    block's first tile)."""
    mask = np.ones(dist.shape, bool)
    if col == start:
        b = dist.shape[0]
        mask[:, :b] = np.triu(np.ones((b, b), bool), k=1)
    return mask


def group_duplicates(hashes: np.ndarray, max_distance: int, *, block: int = 256, columns: int = TILE_COLUMNS,
                     progress: bool = False) -> np.ndarray:
    """(N,) uint64 hashes -> (N,) int64 group ids: images within `max_distance` differing bits
    are in one group, transitively. Groups are numbered 0, 1, ... in the file order of their
    first image; an image with no near-duplicate is a group of its own.

    The closure is what union-find computes; here scipy's connected components over the pairs,
    merged whenever `MERGE_PAIRS` pairs have gathered (and at the end): those pairs plus an edge
    from every image to its group so far. Memory stays O(N + one tile + MERGE_PAIRS), also for
    data whose every image has hundreds of copies; real data (a few thousand close pairs among
    the ~480 M of the 31,072 Kaggle images) merges once.
    """
    hashes = np.ascontiguousarray(hashes, np.uint64).ravel()
    n = len(hashes)
    if max_distance < 0:
        raise ConfigError(f"duplicate distance must be >= 0, got {max_distance}")
    if max_distance == 0:  # exact matches: no pairs needed
        _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        return _renumber(first[inverse])
    rep = np.arange(n)  # rep[i]: some image of i's group so far
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def merge(rep):
        src = np.concatenate([p[0] for p in pending] + [np.arange(n)])
        dst = np.concatenate([p[1] for p in pending] + [rep])
        pending.clear()
        graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        _, first, inverse = np.unique(component, return_index=True, return_inverse=True)
        return first[inverse.ravel()]  # an image of each component (its first), as an image index

    tiles = tqdm(_distance_tiles(hashes, block, columns), total=_num_tiles(n, block, columns),
                 desc="group near-duplicates", unit="tile", disable=not progress or n <= 20 * block,
                 dynamic_ncols=True)
    held = 0
    for start, col, dist in tiles:
        rows, cols = np.nonzero((dist <= max_distance) & _pairs_mask(dist, start, col))
        if len(rows):
            pending.append((rows + start, cols + col))
            held += len(rows)
        if held >= MERGE_PAIRS:
            rep, held = merge(rep), 0
    if pending:
        rep = merge(rep)
    return _renumber(rep)


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Arbitrary group labels -> 0, 1, ... in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each label by its first row
    return order[inverse.ravel()].astype(np.int64)


def keep_first(groups: np.ndarray) -> np.ndarray:
    """(N,) bool: True for the first image (in file order) of each group, what `drop` keeps."""
    groups = np.asarray(groups)
    keep = np.zeros(len(groups), bool)
    keep[np.unique(groups, return_index=True)[1]] = True
    return keep


def pair_distance_histogram(hashes: np.ndarray, *, block: int = 256, columns: int = TILE_COLUMNS) -> np.ndarray:
    """(65,) counts of the N(N-1)/2 pairs of hashes at each Hamming distance 0..64."""
    hashes = np.ascontiguousarray(hashes, np.uint64).ravel()
    counts = np.zeros(HASH_BITS + 1, np.int64)
    for start, col, dist in _distance_tiles(hashes, block, columns):
        counts += np.bincount(dist[_pairs_mask(dist, start, col)], minlength=HASH_BITS + 1)
    return counts


@dataclasses.dataclass(frozen=True)
class DuplicateSummary:
    """What a policy did, for the log: groups with 2+ images, the images in them, the images dropped."""

    policy: str
    max_distance: int
    num_images: int
    num_groups: int            # groups of 2 or more images
    images_in_groups: int      # images in those groups
    images_dropped: int        # `drop`: images_in_groups - num_groups; otherwise 0

    def __str__(self) -> str:
        action = {"drop": f"dropped {self.images_dropped}, kept the first of each group",
                  "same_fold": "each group kept in one fold"}.get(self.policy, "no action")
        return (f"near-duplicates (green pHash, Hamming <= {self.max_distance}): {self.num_groups} groups of "
                f"{self.images_in_groups} images among {self.num_images}; {action}")

    def with_sources(self, source_names: np.ndarray, kept_rows: np.ndarray) -> str:
        """The summary line, with how many images of each source `drop` dropped (a union of sources)."""
        if self.policy != "drop":
            return str(self)
        dropped = np.ones(len(source_names), bool)
        dropped[kept_rows] = False
        names, counts = np.unique(np.asarray(source_names)[dropped], return_counts=True)
        return f"{self} ({', '.join(f'{n}: {c}' for n, c in zip(names, counts)) or 'none'} dropped)"


def apply_policy(groups: np.ndarray, policy: str, max_distance: int = 0
                 ) -> tuple[np.ndarray, np.ndarray | None, DuplicateSummary]:
    """(N,) group ids and a policy -> (rows to keep, fold groups of the kept rows or None, summary).

    `drop` keeps the first image of each group (its fold groups are then all singletons: None);
    `same_fold` keeps every row and returns `groups` for `stratified_folds`; `none` keeps every
    row with no groups.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown data.duplicates {policy!r}: expected one of {', '.join(POLICIES)}")
    groups = np.asarray(groups)
    sizes = np.bincount(groups)
    in_groups = int(sizes[sizes > 1].sum())
    num_groups = int((sizes > 1).sum())
    n = len(groups)
    if policy == "drop":
        rows = np.flatnonzero(keep_first(groups))
        fold_groups = None
    else:
        rows = np.arange(n)
        fold_groups = groups if policy == "same_fold" else None
    summary = DuplicateSummary(policy, max_distance, n, num_groups, in_groups, n - len(rows))
    return rows, fold_groups, summary
