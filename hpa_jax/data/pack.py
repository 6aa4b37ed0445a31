"""Command line: `python -m hpa_jax.data.pack --data_dir=D --out=P [--subdir=train] [--csv=train.csv]
[--format=png|tif|jpg] [--size=N] [--num_threads=4] [--overwrite]`.

Converts one image folder of any reader format (`sources.read_sample`, with its `--yellow`,
`--depth16` and `--resample` rules, resized to `--size`) into a packed store that training reads
without decoding an image:

| file | contents |
|---|---|
| `P/images.u8` | uint8 (N, S, S, 4) R,G,B,Y, a `.npy` file (`np.load(..., mmap_mode="r")` maps it) |
| `P/index.csv` | one column `Id`: row i of `images.u8` is that Id |
| `P/meta.json` | source folder, format, reader rules, size, count, created by (version, command, date) |

Ids come from the `Id` column of `--csv` (relative to `--data_dir`; `train.csv`, or
`sample_submission.csv` for the test images), or from the file names when `--csv=""`. `--size=0`
keeps the stored size, which must then be the same for every image. The store is written into a
temporary folder beside `P` and renamed to `P` only when complete, so a store that exists is whole;
a bad file stops the run with a one-line error naming it and removes the partial folder.

Training reads stores with `data.packed=P`: `P/train` (from `--subdir=train --out=P/train`)
for the training and validation images, `P/test` (from `--subdir=test --csv=sample_submission.csv
--out=P/test`) for prediction; see `pipeline.PackedSource`.
"""

import concurrent.futures
import datetime
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pandas as pd

from hpa_jax.data import kaggle, sources
from hpa_jax.errors import DataError, file_errors, one_line_errors

PROG = "hpa_jax.data.pack"
IMAGES = "images.u8"
INDEX = "index.csv"
META = "meta.json"


def read_ids(data_dir, csv: str, folder, fmt: str) -> list[str]:
    """The Ids to pack: the `Id` column of `data_dir/csv`, or every Id in `folder` when csv is empty."""
    if not csv:
        ids = list(sources.scan_folder(folder, fmt)[0])
        if not ids:
            raise DataError(f"{folder}: no {{Id}}_{{color}}{sources.EXTENSIONS[fmt]} files (wrong --format?)")
        return ids
    path = pathlib.Path(data_dir) / csv
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "Id" not in frame.columns:
        raise DataError(f"{path}: no Id column")
    ids = frame["Id"].tolist()
    if not ids:
        raise DataError(f"{path}: no rows")
    if len(set(ids)) != len(ids):
        dup = frame["Id"][frame["Id"].duplicated()].iloc[0]
        raise DataError(f"{path}: duplicate Id {dup}")
    return ids


def pack_folder(folder, ids, out, *, fmt: str = "png", size: int = 0, yellow: str = "mean_rg",
                resample: str = "lanczos", depth16: str = "linear", num_threads: int = 4,
                overwrite: bool = False, progress: bool = True, command: str = "") -> pathlib.Path:
    """Packs the images `ids` of `folder` into the store `out` (see the module doc); returns `out`.

    Raises a one-line `DataError` naming the first bad file (nothing is left at `out` then)."""
    folder, out = pathlib.Path(folder).expanduser(), pathlib.Path(out).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (remove it or pass --overwrite)")
    ids = [str(i) for i in ids]
    if not ids:
        raise DataError(f"{folder}: no images to pack")

    def read(image_id):
        return sources.read_sample(folder, image_id, fmt=fmt, size=size, yellow=yellow, resample=resample,
                                   depth16=depth16)

    first = read(ids[0])                       # the shape of the store (and an early error for a bad folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        images = np.lib.format.open_memmap(tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(len(ids), *first.shape))
        from tqdm import tqdm

        pool = concurrent.futures.ThreadPoolExecutor(max(1, num_threads))
        try:
            reads = pool.map(read, ids[1:])
            bar = tqdm(total=len(ids), desc=f"packing {folder.name}", unit="img", disable=not progress,
                       file=sys.stderr, smoothing=0.1)
            with bar:
                images[0] = first
                bar.update()
                for row, image in enumerate(reads, start=1):
                    if image.shape != first.shape:
                        path = folder / f"{ids[row]}_red{sources.EXTENSIONS[fmt]}"
                        raise DataError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, the first "
                                        f"({ids[0]}) is {first.shape[0]}x{first.shape[1]}: pass --size to resize "
                                        f"all to one size")
                    images[row] = image
                    bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)   # at an error: no waiting for the queued reads
        images.flush()
        del images
        pd.DataFrame({"Id": ids}).to_csv(tmp / INDEX, index=False)
        from hpa_jax import __version__ as version

        meta = {"source": str(folder.resolve()), "format": fmt, "yellow": yellow, "resample": resample,
                "depth16": depth16, "size": int(first.shape[0]), "resized": bool(size), "count": len(ids),
                "shape": list((len(ids), *first.shape)), "dtype": "uint8", "channels": "R,G,B,Y",
                "created_by": f"{PROG} (hpa_jax {version})", "command": command,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():                       # --overwrite: the old store goes only once the new one is whole
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(store) -> dict:
    """The store's meta.json; a `DataError` when `store` is not a complete store."""
    store = pathlib.Path(store).expanduser()
    missing = [name for name in (IMAGES, INDEX, META) if not (store / name).is_file()]
    if missing:
        raise DataError(f"{store}: not a packed store (missing {', '.join(missing)}; write one with "
                        f"python -m {PROG})")
    with file_errors(store / META):
        return json.loads((store / META).read_text())


def define_flags() -> None:
    """The command line's flags; defined only when run as a program (importing registers none)."""
    from absl import flags

    flags.DEFINE_string("data_dir", None, "Dataset folder (with train.csv and train/ in the Kaggle layout).")
    flags.DEFINE_string("out", None, "Store folder to write (e.g. P/train); must not exist unless --overwrite.")
    flags.DEFINE_string("subdir", "train", "Image folder, relative to --data_dir.")
    flags.DEFINE_string("csv", "train.csv", "CSV with an Id column, relative to --data_dir; '' = every Id "
                                            "in the folder.")
    flags.DEFINE_enum("format", "png", sources.FORMATS, "Channel file format.")
    flags.DEFINE_integer("size", 0, "Resize every image to size x size (0: as stored, all one size).")
    flags.DEFINE_enum("yellow", "mean_rg", sources.YELLOW_RULES, "HPAv18 JPEG yellow channel rule.")
    flags.DEFINE_enum("resample", "lanczos", tuple(kaggle.RESAMPLING), "Resize filter.")
    flags.DEFINE_enum("depth16", "linear", sources.DEPTH16_RULES, "16-bit TIFF to 8-bit rule.")
    flags.DEFINE_integer("num_threads", 4, "Threads decoding images.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing store (once the new one is complete).")
    flags.mark_flags_as_required(["data_dir", "out"])


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    data_dir = pathlib.Path(f.data_dir).expanduser()
    folder = data_dir / f.subdir
    with one_line_errors(PROG), file_errors(f.out, "writing the store", kinds=(OSError,)):   # disk full
        ids = read_ids(data_dir, f.csv, folder, f.format)
        out = pack_folder(folder, ids, f.out, fmt=f.format, size=f.size, yellow=f.yellow, resample=f.resample,
                          depth16=f.depth16, num_threads=f.num_threads, overwrite=f.overwrite,
                          command=" ".join(["python -m", PROG, *sys.argv[1:]]))
    meta = read_meta(out)
    print(f"packed {meta['count']} images of {meta['size']}x{meta['size']}x4 from {folder} -> {out} "
          f"({(out / IMAGES).stat().st_size / 2**20:.1f} MiB)", flush=True)


def cli():
    """The `hpa-jax-pack` console script."""
    from hpa_jax import console

    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
