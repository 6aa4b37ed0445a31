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

The reader rules (`--resample`, `--yellow`, `--depth16`; defaults those of the config) are the
config's `data.resample`, `data.yellow`, `data.depth16`: training refuses a store packed with
another rule than its config's, with a one-line error (`check_rules`), so that the packed images
are the ones evaluation, prediction and `python -m hpa_jax.data.stats` decode.

Ids come from the `Id` column of `--csv` (relative to `--data_dir`; `train.csv`, or
`sample_submission.csv` for the test images), or from the file names when `--csv=""`. `--size=0`
keeps the stored size, which must then be the same for every image. The store is written into a
temporary folder beside `P` and renamed to `P` only when complete, so a store that exists is whole;
a bad file stops the run with a one-line error naming it and removes the partial folder.

`--sources=NAME=FORMAT:IMAGES[:CSV]`, repeated, packs the union of several sources instead (as
`data.sources` lists them, relative to `--data_dir`; `--size` required), e.g. the Kaggle PNGs and
the HPAv18 JPEGs in one store:

    python -m hpa_jax.data.pack --data_dir=D --size=512 --out=P/train \\
        --sources=kaggle=png:train:train.csv --sources=hpav18=jpg:hpav18:HPAv18RBGY_wodpl.csv

Training reads stores with `data.packed=P`: `P/train` (from `--subdir=train --out=P/train`)
for the training and validation images, `P/test` (from `--subdir=test --csv=sample_submission.csv
--out=P/test`) for prediction; see `pipeline.PackedSource`.
"""

import collections
import datetime
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pandas as pd

from hpa_jax.data import combined, parallel, sources
from hpa_jax.errors import ConfigError, DataError, file_errors, one_line_errors

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
                resample: str = sources.DEFAULT_RESAMPLE, depth16: str = "linear", num_threads: int = 4,
                overwrite: bool = False, progress: bool = True, command: str = "") -> pathlib.Path:
    """Packs the images `ids` of `folder` into the store `out` (see the module doc); returns `out`.

    Raises a one-line `DataError` naming the first bad file (nothing is left at `out` then)."""
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    return pack_images([(folder, fmt, str(i)) for i in ids], out, size=size, yellow=yellow, resample=resample,
                       depth16=depth16, num_threads=num_threads, overwrite=overwrite, progress=progress,
                       meta={"source": str(folder.resolve()), "format": fmt}, command=command, name=folder.name)


def pack_sources(sources, out, *, size: int, num_classes: int = 28, **kwargs) -> pathlib.Path:
    """Packs the union of several sources (`combined.Source`s, e.g. Kaggle PNGs and HPAv18 JPEGs)
    into one store, every image resized to `size`, in the union's row order (what
    `data.sources` trains on); `kwargs` as `pack_folder`'s."""
    if len(sources) > 1 and not size:
        raise DataError("packing several sources needs --size: their images may differ in size")
    for source in sources:
        if not source.images.is_dir():
            raise DataError(f"{source.images}: image folder of source {source.name} not found")
    union = combined.read_union(sources, num_classes)
    entries = [(sources[k].images, sources[k].fmt, str(i)) for i, k in zip(union.ids, union.source)]
    meta = {"source": ", ".join(str(s.images.resolve()) for s in sources),
            "format": ",".join(sorted({s.fmt for s in sources})),
            "sources": [{"name": s.name, "format": s.fmt, "images": str(s.images.resolve()), "csv": str(s.csv.resolve()),
                         "count": n} for s, n in zip(sources, union.counts().values())]}
    return pack_images(entries, out, size=size, meta=meta, name="+".join(s.name for s in sources), **kwargs)


def pack_images(entries, out, *, size: int = 0, yellow: str = "mean_rg", resample: str = sources.DEFAULT_RESAMPLE,
                depth16: str = "linear", num_threads: int = 4, overwrite: bool = False, progress: bool = True,
                meta: dict | None = None, command: str = "", name: str = "") -> pathlib.Path:
    """Packs `entries`, (folder, format, Id) triples, into the store `out` in their order.

    Memory stays flat whatever the count: the images are read by `num_threads` threads a few
    ahead of the writer (`parallel.ordered_map`) and appended to the `.npy` file, not held in a
    memory map (whose dirty pages would count as the process's own)."""
    out = pathlib.Path(out).expanduser()
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists (remove it or pass --overwrite)")
    entries = list(entries)
    if not entries:
        raise DataError(f"{out}: no images to pack")
    ids = [image_id for _, _, image_id in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in collections.Counter(ids).items() if n > 1)
        raise DataError(f"{out}: Id {dup} is listed twice; a store keys its images by Id")

    def read(entry):
        folder, fmt, image_id = entry
        return sources.read_sample(folder, image_id, fmt=fmt, size=size, yellow=yellow, resample=resample,
                                   depth16=depth16)

    first = read(entries[0])                   # the shape of the store (and an early error for a bad folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        from tqdm import tqdm

        shape = (len(entries), *first.shape)
        with open(tmp / IMAGES, "wb") as f, tqdm(total=len(entries), desc=f"packing {name}", unit="img",
                                                  disable=not progress, file=sys.stderr, smoothing=0.1) as bar:
            np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                     "fortran_order": False, "shape": shape})
            f.write(first.tobytes())
            bar.update()
            reads = parallel.ordered_map(read, entries[1:], num_threads=num_threads)
            for (folder, fmt, image_id), image in zip(entries[1:], reads):
                if image.shape != first.shape:
                    path = pathlib.Path(folder) / f"{image_id}_red{sources.EXTENSIONS[fmt]}"
                    raise DataError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, the first "
                                    f"({ids[0]}) is {first.shape[0]}x{first.shape[1]}: pass --size to resize "
                                    f"all to one size")
                f.write(image.tobytes())
                bar.update()
        pd.DataFrame({"Id": ids}).to_csv(tmp / INDEX, index=False)
        from hpa_jax import __version__ as version

        meta = {**(meta or {}), "yellow": yellow, "resample": resample, "depth16": depth16,
                "size": int(first.shape[0]), "resized": bool(size), "count": len(entries), "shape": list(shape),
                "dtype": "uint8", "channels": "R,G,B,Y", "created_by": f"{PROG} (hpa_jax {version})",
                "command": command,
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


# The reader rules a store records in meta.json, each with the formats whose pixels it changes
# (None: all, when the images were resized).
RULES = {"resample": None, "yellow": "jpg", "depth16": "tif"}


def check_rules(store, meta: dict, data_config) -> None:
    """A one-line `ConfigError` when the store was packed with a reader rule (`data.resample`, and
    `data.yellow` / `data.depth16` for stores with JPEGs / TIFFs) other than the config's: the
    images trained on would not be those that evaluation, prediction and `stats` decode."""
    formats = set(str(meta.get("format", "")).split(","))
    for rule, fmt in RULES.items():
        if (meta.get("resized", True) if fmt is None else fmt in formats) and rule in meta:
            wanted = data_config[rule]
            if meta[rule] != wanted:
                raise ConfigError(f"{store}: packed with --{rule}={meta[rule]} but data.{rule} is {wanted!r}: repack "
                                  f"with --{rule}={wanted} or set data.{rule}={meta[rule]}")


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
    flags.DEFINE_enum("resample", sources.DEFAULT_RESAMPLE, sources.RESAMPLE_RULES,
                      "Resize rule (data.resample; see hpa_jax.data.sources), recorded in meta.json.")
    flags.DEFINE_enum("depth16", "linear", sources.DEPTH16_RULES, "16-bit TIFF to 8-bit rule.")
    flags.DEFINE_integer("num_threads", 4, "Threads decoding images.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing store (once the new one is complete).")
    flags.DEFINE_multi_string("sources", [], combined.SOURCES_HELP + " Packs their union; --subdir, --csv and "
                                             "--format are then unused.")
    flags.mark_flags_as_required(["data_dir", "out"])


def main(argv):
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    data_dir = pathlib.Path(f.data_dir).expanduser()
    folder = data_dir / f.subdir
    options = dict(size=f.size, yellow=f.yellow, resample=f.resample, depth16=f.depth16, num_threads=f.num_threads,
                   overwrite=f.overwrite, command=" ".join(["python -m", PROG, *sys.argv[1:]]))
    with one_line_errors(PROG), file_errors(f.out, "writing the store", kinds=(OSError,)):   # disk full
        if f.sources:
            union = combined.parse_sources(f.sources, data_dir)
            out = pack_sources(union, f.out, **options)
        else:
            ids = read_ids(data_dir, f.csv, folder, f.format)
            out = pack_folder(folder, ids, f.out, fmt=f.format, **options)
    meta = read_meta(out)
    origin = (" + ".join(f"{s['name']} ({s['count']})" for s in meta["sources"]) if f.sources else str(folder))
    print(f"packed {meta['count']} images of {meta['size']}x{meta['size']}x4 from {origin} -> {out} "
          f"({(out / IMAGES).stat().st_size / 2**20:.1f} MiB)", flush=True)


def cli():
    """The `hpa-jax-pack` console script."""
    from hpa_jax import console

    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
