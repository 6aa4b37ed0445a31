"""`scripts/benchmark.py scale`: the data tools at the real dataset sizes, time and peak memory.

Builds, in a temporary folder (never in the repo), a 31,072-image Kaggle-layout dataset with the
real label file (`../shared/data/hpa_kaggle_train_labels.csv`) whose channel files are hard links
(symlinks where the file system refuses) cycling over the 101 real sample images, and runs each
data tool on it as a user runs it, in its own process: `data.check`, `data.stats`, green-channel
hashing + near-duplicate grouping, folds, and `data.pack --size=512`. Each tool also runs on a
tenth of the rows first: its peak memory (the process's maximum resident set, from `wait4`) at
3,107 and at 31,072 images shows whether it grows with the dataset.

Then the 105,678-image union of Kaggle and HPAv18 (both real label files; the HPAv18 rows link to
the 8 converted 512 px sample PNGs): the label checks, E-loss counts, folds and duplicate grouping
at full size; decoding the union is extrapolated from the per-image decoding times of the Kaggle
PNGs and of the 8 real full-size HPAv18 JPEGs, measured here.

Note on the duplicates: every image of the built dataset is one of 101 (or 8) real images, so
each has hundreds (thousands) of exact copies; grouping then meets far more close pairs than real
data has (its worst case), and finds 101 + 8 groups. A second grouping of the union's size runs on
hashes with real data's share of near-copies.

    python scripts/benchmark.py scale [--skip_pack] [--limit N]
    python scripts/benchmark_scale.py ...      # the same, run directly
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from hpa_jax.classes import CHANNELS
from hpa_jax.data import duplicates
from hpa_jax.reporting.performance import area_main, when

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"
SHARED = REPO.parent / "shared" / "data"
KAGGLE_LABELS = SHARED / "hpa_kaggle_train_labels.csv"
HPAV18_LABELS = SHARED / "hpav18_labels.csv"


def add_arguments(parser):
    parser.add_argument("--doc", type=pathlib.Path, default=DOC, help="Markdown file whose scale section to rewrite")
    parser.add_argument("--tmp", type=pathlib.Path, default=None, help="where to build the datasets (default: "
                                                                        "the system's temporary folder)")
    parser.add_argument("--threads", type=int, default=4, help="--num_threads of every tool")
    parser.add_argument("--skip_pack", action="store_true", help="leave out pack (writes ~33 GB)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows of each label file (a "
                                                             "quick try of the benchmark itself)")


def link(src: pathlib.Path, dst: pathlib.Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(src, dst)


def build(root: pathlib.Path, labels_csv: pathlib.Path, images: list[pathlib.Path], rows: int | None = None,
          subdir: str = "train", csv_name: str = "train.csv") -> int:
    """`root/csv_name` (the label file's first `rows` rows) and `root/subdir/{Id}_{color}.png` linked to
    `images[i % len(images)]`'s channel files (each a path prefix `.../{Id}`); returns the row count."""
    import pandas as pd
    from tqdm import tqdm

    frame = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    if rows:
        frame = frame.head(rows)
    folder = root / subdir
    folder.mkdir(parents=True, exist_ok=True)
    for i, image_id in enumerate(tqdm(frame["Id"], desc=f"linking {subdir}", unit="img", file=sys.stderr)):
        prefix = images[i % len(images)]
        for color in CHANNELS:
            link(prefix.with_name(f"{prefix.name}_{color}.png"), folder / f"{image_id}_{color}.png")
    frame[["Id", "Target"]].to_csv(root / csv_name, index=False)
    return len(frame)


def sample_prefixes(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted({p.with_name(p.name.rsplit("_", 1)[0]) for p in folder.glob("*_green.png")})


def measure(args: list[str]) -> tuple[float, float, str]:
    """Runs `python ARGS` from the repo; (seconds, peak RSS in MiB of that process, its stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):          # check exits 1 when it finds problems
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{out}")
    return seconds, usage.ru_maxrss / 1024, out


STEP = [str(pathlib.Path(__file__).resolve()), "--step"]


def tool_commands(data_dir: pathlib.Path, out: pathlib.Path, threads: int, skip_pack: bool) -> dict[str, list[str]]:
    commands = {
        "check": ["-m", "hpa_jax.data.check", f"--data_dir={data_dir}", f"--num_threads={threads}"],
        "stats": ["-m", "hpa_jax.data.stats", f"--data_dir={data_dir}", f"--num_threads={threads}"],
        "duplicates (hash + group)": [*STEP, "duplicates", str(data_dir), str(threads),
                                      str(out.parent / f"hashes-{data_dir.name}.npy")],
        "folds (5, iterstrat)": [*STEP, "folds", str(data_dir / "train.csv")],
    }
    if not skip_pack:
        commands["pack (512 px)"] = ["-m", "hpa_jax.data.pack", f"--data_dir={data_dir}", f"--out={out / 'packed'}",
                                     "--size=512", f"--num_threads={threads}"]
    return commands


def run(args) -> str:
    if not KAGGLE_LABELS.is_file():
        raise SystemExit(f"the real label files are not at {SHARED} (../shared/data beside the repo)")
    kaggle_images = sample_prefixes(SHARED / "hpa_kaggle_sample" / "train")
    hpav18_images = sample_prefixes(SHARED / "hpav18_sample" / "train")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hpa_jax_scale-", dir=args.tmp))
    rows, started = [], time.perf_counter()
    try:
        small, full = tmp / "kaggle-tenth", tmp / "kaggle"
        n_full = build(full, KAGGLE_LABELS, kaggle_images, rows=args.limit or None)
        n_small = build(small, KAGGLE_LABELS, kaggle_images, rows=n_full // 10)
        results = {}
        for name in tool_commands(full, tmp, args.threads, args.skip_pack):
            per_size = []
            for data_dir, n in ((small, n_small), (full, n_full)):
                (tmp / "out").mkdir(exist_ok=True)
                command = tool_commands(data_dir, tmp / "out", args.threads, args.skip_pack)[name]
                seconds, rss, out = measure(command)
                per_size.append((n, seconds, rss))
                print(f"{name} on {n}: {seconds:.1f} s, peak RSS {rss:.0f} MiB", file=sys.stderr, flush=True)
                if n == n_full:
                    results[name] = (seconds, out)
                shutil.rmtree(tmp / "out")
            (n0, _, rss0), (n1, seconds, rss1) = per_size
            rows.append(f"| {name} | {n1:,} | {seconds / 60:.1f} min | {n1 / seconds:,.0f} | {rss0:,.0f} | "
                        f"{rss1:,.0f} | {when()} |")

        # The Kaggle + HPAv18 union at full size.
        union_dir = tmp / "union"
        build(union_dir, KAGGLE_LABELS, kaggle_images, rows=args.limit or None)
        n_ext = build(union_dir, HPAV18_LABELS, hpav18_images, rows=args.limit or None, subdir="hpav18",
                      csv_name="HPAv18RBGY_wodpl.csv")
        union_rows = []
        for name, step in [("label checks (both CSVs) + E-loss counts", "union_labels"),
                           ("folds (5, iterstrat)", "union_folds"),
                           (f"group {n_full + n_ext:,} hashes (near-duplicates), these images", "union_duplicates"),
                           (f"group {n_full + n_ext:,} hashes, 6% near-copies (as real data)", "union_duplicates_typical")]:
            seconds, rss, out = measure([*STEP, step, str(union_dir), str(tmp / f"hashes-{full.name}.npy")])
            print(f"union {name}: {seconds:.1f} s, {rss:.0f} MiB\n{out}", file=sys.stderr, flush=True)
            union_rows.append(f"| {name} | {n_full + n_ext:,} | {seconds:.0f} s | {rss:,.0f} | {out.strip()} |")
        seconds, rss, out = measure([*STEP, "decode"])
        decode = json.loads(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - started

    png_s, jpg_s = decode["png_s"], decode["jpg_s"]
    factor = (n_full * png_s + n_ext * jpg_s) / (n_full * png_s)
    extrapolated = [f"| {name} | {results[name][0] * factor / 60:.0f} min |"
                    for name in ("check", "stats", "pack (512 px)") if name in results]
    return f"""## scale: the data tools at 31,072 and 105,678 images

`python scripts/benchmark.py scale` (`scripts/benchmark_scale.py`): a 31,072-image Kaggle-layout
dataset with the real `train.csv`, every channel file a hard link to one of the 101 real sample
images in turn, built in a temporary folder; each tool run as a user runs it, in its own process,
with `--num_threads={args.threads}` on this machine's {os.cpu_count()} cores; peak memory is that
process's maximum resident set. Each tool ran first on the label file's first {n_small:,} rows: memory
that stays flat from {n_small:,} to {n_full:,} images does not grow with the dataset (only labels,
hashes and indices do). The whole benchmark took {total / 60:.0f} min.

| tool | images | time | images/s | peak RSS at {n_small:,} (MiB) | peak RSS at {n_full:,} (MiB) | measured |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Duplicates: every image is one of 101 real ones, so each has ~300 exact copies and the grouping
meets ~{n_full * n_full / 101 / 2 / 1e6:.1f} M close pairs (real data: a few thousand), its worst
case; hashing reads only the green files. Its memory at full size includes one merge of
`duplicates.MERGE_PAIRS` ({duplicates.MERGE_PAIRS:,}) close pairs into the groups (scipy's graph of them), a
fixed bound reached once there are that many pairs, not a growth with the images (the union's
worst-case grouping below, with far more pairs, shows the same bound plus its larger arrays).

### Kaggle + HPAv18 union ({n_full:,} + {n_ext:,} = {n_full + n_ext:,} rows)

Both real label files; the HPAv18 rows link to the 8 converted 512 px sample PNGs.

| step | rows | time | peak RSS (MiB) | result |
|---|---|---|---|---|
{chr(10).join(union_rows)}

Decoding, measured per image in one thread: a 512 px Kaggle PNG (4 channels) {png_s * 1e3:.1f} ms,
a full-size HPAv18 JPEG set (4 RGB JPEGs of 1728-2048 px, the 8 real ones) resized to 512
{jpg_s * 1e3:.0f} ms, {jpg_s / png_s:.1f}x the PNG. Tools that decode every image would take on the
union, at the rates measured above ({factor:.1f}x the Kaggle time):

| tool | union, extrapolated |
|---|---|
{chr(10).join(extrapolated)}

Convert or pack the HPAv18 JPEGs once (`data.pack --sources=... --size=512`): training then reads
the store without decoding a JPEG.
"""


# ---- steps, each run in its own process by `measure` -----------------------------------------

def step_duplicates(data_dir, threads, out):
    import numpy as np
    import pandas as pd

    from hpa_jax.data import duplicates

    ids = pd.read_csv(pathlib.Path(data_dir) / "train.csv", dtype=str)["Id"].tolist()
    hashes = duplicates.hash_images(pathlib.Path(data_dir) / "train", ids, num_threads=int(threads))
    np.save(out, hashes)
    groups = duplicates.group_duplicates(hashes, duplicates.DEFAULT_MAX_DISTANCE, progress=True)
    print(duplicates.apply_policy(groups, "drop", duplicates.DEFAULT_MAX_DISTANCE)[2])


def step_folds(csv):
    from hpa_jax.data import folds, kaggle

    labels = kaggle.multi_hot(kaggle.read_labels_csv(csv)["labels"])
    assignment = folds.stratified_folds(labels, 5, 0)
    print(" ".join(str(int((assignment == k).sum())) for k in range(5)))


def union_sources(data_dir):
    from hpa_jax.data import combined

    return combined.parse_sources(("kaggle=png:train:train.csv", "hpav18=png:hpav18:HPAv18RBGY_wodpl.csv"),
                                  data_dir)


def step_union_labels(data_dir, _):
    from hpa_jax.training import losses
    from hpa_jax.data import combined

    union = combined.read_union(union_sources(data_dir), 28)
    weights = losses.effective_number_weights(union.labels.sum(0), 0.99)
    print(f"{union.counts()}; E-loss weights (alpha 0.99) {weights.min():.2f}..{weights.max():.2f}")


def step_union_folds(data_dir, _):
    from hpa_jax.data import combined, folds

    union = combined.read_union(union_sources(data_dir), 28)
    assignment = folds.stratified_folds(union.labels, 5, 0)
    print("fold sizes " + " ".join(str(int((assignment == k).sum())) for k in range(5)))


def step_union_duplicates(data_dir, kaggle_hashes):
    """Groups the union's hashes: Kaggle's as the duplicates step computed them, HPAv18's those of
    the 8 images its rows link to, in the same cycle (hashing the same files again would only
    repeat the hashing measured above)."""
    import numpy as np

    from hpa_jax.data import combined, duplicates

    union = combined.read_union(union_sources(data_dir), 28)
    images = sample_prefixes(SHARED / "hpav18_sample" / "train")
    cycle = duplicates.hash_images(images[0].parent, [p.name for p in images], progress=False)
    n_ext = len(union.rows_of(1))
    hashes = np.concatenate([np.load(kaggle_hashes), np.resize(cycle, n_ext)])
    start = time.perf_counter()
    groups = duplicates.group_duplicates(hashes, duplicates.DEFAULT_MAX_DISTANCE, progress=True)
    rows, _, summary = duplicates.apply_policy(groups, "drop", duplicates.DEFAULT_MAX_DISTANCE)
    print(f"{summary.with_sources(union.source_names, rows)}; grouping {time.perf_counter() - start:.0f} s")


def step_union_duplicates_typical(data_dir, _):
    """Groups hashes as real data has them: distinct random 64-bit hashes, of which ~6% (the
    paper's ~6000 of the Kaggle images) are copies of another image with 0-2 bits changed."""
    import numpy as np

    from hpa_jax.data import combined, duplicates

    n = len(combined.read_union(union_sources(data_dir), 28).ids)
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, np.iinfo(np.int64).max, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    copies = rng.choice(n, n * 6 // 100, replace=False)
    flips = np.left_shift(np.uint64(1), rng.integers(0, 64, (len(copies), 2)).astype(np.uint64))
    flips[rng.random(len(copies)) < 0.5, 1] = 0
    hashes[copies] = hashes[rng.integers(0, n, len(copies))] ^ flips[:, 0] ^ flips[:, 1]
    start = time.perf_counter()
    groups = duplicates.group_duplicates(hashes, duplicates.DEFAULT_MAX_DISTANCE, progress=True)
    summary = duplicates.apply_policy(groups, "drop", duplicates.DEFAULT_MAX_DISTANCE)[2]
    print(f"{summary}; grouping {time.perf_counter() - start:.0f} s")


def step_decode():
    from hpa_jax.data import sources

    def per_image(folder, ids, fmt, size, passes):
        start = time.perf_counter()
        for _ in range(passes):
            for image_id in ids:
                sources.read_sample(folder, image_id, fmt=fmt, size=size)
        return (time.perf_counter() - start) / (passes * len(ids))

    kaggle = SHARED / "hpa_kaggle_sample" / "train"
    raw = SHARED / "hpav18_sample" / "raw_jpg"
    print(json.dumps({"png_s": per_image(kaggle, [p.name for p in sample_prefixes(kaggle)], "png", 0, 2),
                      "jpg_s": per_image(raw, sorted({p.name.rsplit("_", 1)[0] for p in raw.glob("*.jpg")}),
                                         "jpg", 512, 2)}))


STEPS = {"duplicates": step_duplicates, "folds": step_folds, "union_labels": step_union_labels,
         "union_folds": step_union_folds, "union_duplicates": step_union_duplicates,
         "union_duplicates_typical": step_union_duplicates_typical, "decode": step_decode}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--step"]:      # one step, in the process `measure` started
        STEPS[argv[1]](*argv[2:])
        return
    area_main("scale", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
