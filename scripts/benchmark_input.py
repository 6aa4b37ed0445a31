"""`scripts/benchmark.py input`: the input pipeline: decoding and packed reading, per thread and process.

Decoding (`decoding_rows`): images per second of one reading thread, at the paper's sizes (each
image read at 768 px, then a 512 px crop copied out of it as the training reader does), the real
sample images of ../shared/data in the page cache (one untimed pass first), the paths timed in
turn, pass after pass (so a busy moment of the machine slows them all), the median of `--passes`;
a rate is the images over the reading thread's CPU time (`time.thread_time`: the rate of one
core, which other work on a shared machine changes less than the wall clock; OpenCV runs with
one thread, as in the readers). The paths: `sources.read_sample` with each `data.resample` rule,
the 2018 winner's reader (per channel `cv2.imread` + `cv2.resize`, INTER_LINEAR), a PIL loop with
bilinear resizing (the PyTorch HPA baselines), HPAv18 JPEGs (2048 and 1728 px), and full-size
2048 px TIFFs, 8- and 16-bit, written for the run into a temporary folder (never in the repo)
from the PNGs (enlarged 4x by area, the 16-bit ones x 257). Then each rule's pixels against
`lanczos` on the real images, and the single-plane decoders the libraries were chosen from.

    python scripts/benchmark.py input [--n 40] [--passes 3]
    python scripts/benchmark_input.py ...      # the same, run directly
"""

import math
import pathlib
import statistics
import tempfile
import time

import numpy as np

from hpa_jax.classes import CHANNELS
from hpa_jax.data import kaggle, sources
from hpa_jax.reporting.performance import area_main, machine

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE, CROP = 768, 512
H100_RATE = 1000   # ResNet50 training images/s of one H100 at 512 px (docs/scaling.md's estimate)
OPENCV_RULES = tuple(kaggle.OPENCV_RULES)


def add_arguments(parser):
    parser.add_argument("--data_dir", type=pathlib.Path, default=REPO.parent / "shared" / "data",
                        help="the shared sample data (default ../shared/data beside the repo)")
    parser.add_argument("--n", type=int, default=40, help="Kaggle PNG images per decoding path (default 40)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes per path; the median is reported")
    parser.add_argument("--batch", type=int, default=32, help="batch of the training and validation iterators")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="seconds each packed iterator is timed (decoding: 4x), after its first batch")
    parser.add_argument("--doc", type=pathlib.Path, default=REPO / "docs" / "performance.md")


def _crop(image: np.ndarray) -> np.ndarray:
    """The training reader's crop: a 512 px square copied out (here the centre)."""
    top, left = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
    return image[top:top + CROP, left:left + CROP].copy()


def _ids(folder: pathlib.Path, ext: str) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in folder.glob(f"*_red{ext}")})


def _rates(paths: dict, passes: int) -> dict[str, float]:
    """{name: images per second of thread CPU time} of `paths` {name: (read(item), items)}: one
    untimed pass each, then `passes` rounds in which every path runs once; the median per path."""
    for read, items in paths.values():
        for item in items:
            read(item)
    times = {name: [] for name in paths}
    for _ in range(max(passes, 1)):
        for name, (read, items) in paths.items():
            start = time.thread_time()
            for item in items:
                read(item)
            times[name].append(time.thread_time() - start)
    return {name: len(paths[name][1]) / statistics.median(t) for name, t in times.items()}


def _write_tifs(png_folder: pathlib.Path, ids: list[str], out: pathlib.Path) -> None:
    """Full-size 2048 px TIFFs of `ids`: 8-bit `{Id}8_{color}.tif` and 16-bit `{Id}16_{color}.tif`."""
    import tifffile  # noqa: PLC0415

    cv2 = kaggle.opencv()
    for image_id in ids:
        for color in CHANNELS:
            plane = cv2.resize(kaggle.pil_png_plane(png_folder / f"{image_id}_{color}.png", color), (2048, 2048),
                               interpolation=cv2.INTER_AREA)
            tifffile.imwrite(out / f"{image_id}8_{color}.tif", plane)
            tifffile.imwrite(out / f"{image_id}16_{color}.tif", plane.astype(np.uint16) * 257)


def decoding_rows(args) -> list[tuple[str, float]]:
    """(path, images/s of one thread) for each decoding path at 768 px with a 512 px crop."""
    from PIL import Image  # noqa: PLC0415

    cv2 = kaggle.opencv()                   # one OpenCV thread everywhere, as in the readers
    pngs = args.data_dir / "hpa_kaggle_sample" / "train"
    jpegs = args.data_dir / "hpav18_sample" / "raw_jpg"
    png_ids, jpeg_ids = _ids(pngs, ".png")[:args.n], _ids(jpegs, ".jpg")

    def reader(folder, fmt, rule):
        return lambda image_id: _crop(sources.read_sample(folder, image_id, fmt=fmt, size=SIZE, resample=rule))

    def winner(image_id):                   # the 2018 winner's reader: cv2 per channel, linear resize
        return _crop(np.stack([cv2.resize(cv2.imread(str(pngs / f"{image_id}_{c}.png"), cv2.IMREAD_GRAYSCALE),
                                          (SIZE, SIZE)) for c in CHANNELS], axis=-1))

    def pil_bilinear(image_id):
        return _crop(np.stack([np.asarray(Image.open(pngs / f"{image_id}_{c}.png").resize(
            (SIZE, SIZE), Image.Resampling.BILINEAR)) for c in CHANNELS], axis=-1))

    png_paths = {f"Kaggle PNG 512 px, `read_sample` `{rule}`" + (" (the rule before OpenCV's)" if rule == "lanczos"
                                                                else " (default)" if rule == "linear" else ""):
                 (reader(pngs, "png", rule), png_ids) for rule in ("lanczos", *OPENCV_RULES)}
    png_paths["Kaggle PNG 512 px, the 2018 winner's reader (cv2.imread + cv2.resize per channel)"] = (winner, png_ids)
    png_paths["Kaggle PNG 512 px, a PIL loop with bilinear resize (PyTorch HPA baselines)"] = (pil_bilinear, png_ids)
    jpeg_paths = {f"HPAv18 JPEG 2048/1728 px, `read_sample` `{rule}`" + (
        " (full decode, PIL's filter)" if rule == "lanczos" else " (DCT-scaled decode)"):
        (reader(jpegs, "jpg", rule), jpeg_ids) for rule in ("lanczos", "linear")}
    rates = _rates({**png_paths, **jpeg_paths}, args.passes)
    with tempfile.TemporaryDirectory(prefix="hpa_input_tifs_") as tmp:
        tif_ids = png_ids[:4]
        _write_tifs(pngs, tif_ids, pathlib.Path(tmp))
        tif_paths = {f"TIFF 2048 px {bits}-bit, `read_sample` `{rule}`": (
            reader(pathlib.Path(tmp), "tif", rule), [f"{i}{bits}" for i in tif_ids])
            for bits in (8, 16) for rule in ("lanczos", "linear")}
        rates.update(_rates(tif_paths, args.passes))
    return list(rates.items())


# ---- the training and validation iterators ---------------------------------------------------

def pipeline_rows(args, tmp: pathlib.Path) -> list[tuple[str, float]]:
    """(path, images/s of wall time) of the training iterator (`pipeline.train_batches`, batch
    `--batch`, 768 px images cropped to 512) and the validation iterator (`pipeline.eval_batches`,
    whole 768 px images), on the Kaggle sample packed at 768 px and decoded from its PNGs (the
    default rule), with 1 and 2 threads and 1 and 2 reader processes; the copy limit first."""
    import pandas as pd  # noqa: PLC0415

    from hpa_jax.data import pack, pipeline  # noqa: PLC0415

    folder = args.data_dir / "hpa_kaggle_sample" / "train"
    ids = pd.read_csv(folder.parent / "train.csv", dtype=str)["Id"].to_numpy()
    labels = np.zeros((len(ids), 28), np.uint8)
    store = pack.pack_folder(folder, ids, tmp / "packed", size=SIZE, num_threads=2, progress=False)
    packed = pipeline.PackedSource(store, ids, labels)
    decoded = pipeline.ImageSource(folder, ids[:args.n], labels[:args.n], image_size=SIZE)
    # a validation set of 8 x 101 rows (a store row may repeat), so that its batches are many
    repeated = np.tile(ids, 8)
    sets = {"packed store": (packed, pipeline.PackedSource(store, repeated, np.zeros((len(repeated), 28), np.uint8)),
                             args.seconds),
            "PNG decoding": (decoded, decoded, 4 * args.seconds)}

    def rate(batches, seconds):
        return pipeline.reader_images_per_second(batches, seconds)[0]

    def train(source, threads, workers, seconds):
        return rate(pipeline.train_batches(source, batch_size=args.batch, crop_size=CROP, seed=0, epoch=0,
                                           num_threads=threads, prefetch=2 * threads, num_workers=workers,
                                           num_epochs=10**6), seconds)

    def validate(source, threads, workers, seconds):
        def epochs():   # the validation set again and again (a fresh iterator each pass, as each validation)
            while True:
                batches = pipeline.eval_batches(source, batch_size=args.batch, num_threads=threads,
                                                prefetch=2 * threads, num_workers=workers)
                try:
                    yield from batches
                finally:
                    batches.close()
        return rate(epochs(), seconds)

    rows = [(f"copy limit: only the {CROP} px crop out of the memory map, a plain loop, {threads} thread"
             + ("s" if threads > 1 else ""), pipeline.copy_limit(packed.images, CROP, args.seconds, threads)) for threads in (1, 2)]
    readers = ((1, 0), (2, 0), (1, 1), (1, 2))
    for name, (source, validation_set, seconds) in sets.items():
        for threads, workers in readers:
            how = f"{threads} thread{'s' if threads > 1 else ''}" + (
                f" in each of {workers} reader process{'es' if workers > 1 else ''}" if workers else "")
            rows.append((f"train: {name}, {how}", train(source, threads, workers, seconds)))
        for threads, workers in readers[:2]:
            rows.append((f"validate: {name}, {threads} thread{'s' if threads > 1 else ''}",
                         validate(validation_set, threads, workers, seconds)))
    return rows


def pixel_differences(args) -> dict[str, tuple[float, int, float, int]]:
    """{rule: (mean, max |difference| from lanczos on the Kaggle PNGs 512 -> 768, the same on the
    HPAv18 JPEGs -> 768)} in grey levels, over every sample image."""
    result = {}
    for folder, fmt, ext in ((args.data_dir / "hpa_kaggle_sample" / "train", "png", ".png"),
                             (args.data_dir / "hpav18_sample" / "raw_jpg", "jpg", ".jpg")):
        ids = _ids(folder, ext)
        reference = [sources.read_sample(folder, i, fmt=fmt, size=SIZE, resample="lanczos").astype(np.int16)
                     for i in ids]
        for rule in sources.RESAMPLE_RULES:
            if rule == "lanczos":
                continue
            diffs = [np.abs(sources.read_sample(folder, i, fmt=fmt, size=SIZE, resample=rule) - r)
                     for i, r in zip(ids, reference)]
            result[rule] = (*result.get(rule, ()), float(np.mean([d.mean() for d in diffs])),
                            int(max(d.max() for d in diffs)))
    return result


def plane_decoders(args) -> list[tuple[str, float]]:
    """(decoder, files/s) for one Kaggle PNG plane and one HPAv18 JPEG file, each library's way."""
    import simplejpeg  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    cv2 = kaggle.opencv()
    pngs = sorted((args.data_dir / "hpa_kaggle_sample" / "train").glob("*.png"))[:4 * args.n]
    jpegs = sorted((args.data_dir / "hpav18_sample" / "raw_jpg").glob("*.jpg"))

    def pil(path):
        with Image.open(path) as img:
            img.load()
            return np.asarray(img)

    def pil_draft(path):
        with Image.open(path) as img:
            img.draft("RGB", (SIZE, SIZE))
            img.load()
            return np.asarray(img)

    def turbo(path, size=0):
        with open(path, "rb") as f:
            return simplejpeg.decode_jpeg(f.read(), colorspace="RGB", min_width=size, min_height=size)

    paths = {"PNG plane: PIL": (pil, pngs),
             "PNG plane: OpenCV (`cv2.imdecode`, chosen)": (lambda p: kaggle.open_png_plane(p, "red"), pngs),
             "JPEG file at full size: PIL": (pil, jpegs),
             "JPEG file at full size: simplejpeg (chosen)": (turbo, jpegs),
             "JPEG file reduced: PIL `draft` (1/2)": (pil_draft, jpegs),
             "JPEG file reduced: OpenCV `IMREAD_REDUCED_COLOR_2`":
                 (lambda p: cv2.imread(str(p), cv2.IMREAD_REDUCED_COLOR_2), jpegs),
             "JPEG file reduced: simplejpeg, M/8 >= 768 px (chosen)": (lambda p: turbo(p, SIZE), jpegs),
             "JPEG file reduced: simplejpeg, M/8 >= 768 px, luma only (rejected: `luma_error`)":
                 (lambda p: luma(p, SIZE), jpegs)}
    return list(_rates(paths, args.passes).items())


# An HPAv18 channel file is an RGB JPEG whose colour holds the channel; its luma alone
# (Y = 0.299 R + 0.587 G + 0.114 B) skips the chroma planes' inverse DCT and upsampling.
LUMA_WEIGHT = {"red": 0.299, "green": 0.587, "blue": 0.114, "yellow": 0.299 + 0.587}


def luma(path, size: int = 0) -> np.ndarray:
    """One HPAv18 channel file's luma plane, decoded at libjpeg's reduced scale (>= `size`)."""
    import simplejpeg  # noqa: PLC0415

    with open(path, "rb") as f:
        return simplejpeg.decode_jpeg(f.read(), colorspace="GRAY", min_width=size, min_height=size)[..., 0]


def luma_error(args) -> dict[str, tuple[float, float, float]]:
    """{channel: (mean |difference|, its 99th percentile, the channel's mean)} in grey levels between
    the plane read from the luma alone (Y / the channel's weight in Y) and the colour-decoded plane
    (`_jpeg_plane`'s: the channel's RGB plane, yellow the mean of R and G), over the HPAv18 files."""
    import simplejpeg  # noqa: PLC0415

    found: dict[str, list] = {}
    for path in sorted((args.data_dir / "hpav18_sample" / "raw_jpg").glob("*.jpg")):
        color = path.stem.rsplit("_", 1)[1]
        with open(path, "rb") as f:
            rgb = simplejpeg.decode_jpeg(f.read(), colorspace="RGB", min_width=SIZE, min_height=SIZE)
        exact = sources._jpeg_plane(rgb, color, "mean_rg").astype(np.float64)
        from_luma = np.clip(np.round(luma(path, SIZE) / LUMA_WEIGHT[color]), 0, 255)
        difference = np.abs(from_luma - exact)
        found.setdefault(color, []).append((difference.mean(), np.percentile(difference, 99), exact.mean()))
    return {color: tuple(np.mean(values, axis=0)) for color, values in found.items()}


def mib(name: str) -> float:
    """MiB one image of a pipeline row moves: a 512 px crop when training, the whole 768 px image when validating."""
    side = SIZE if name.startswith("validate") else CROP
    return side * side * 4 / 2**20


def run(args) -> str:
    args.data_dir = args.data_dir.resolve()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpa_input_store_") as tmp:
        iterators = pipeline_rows(args, pathlib.Path(tmp))
    rows = decoding_rows(args)
    winner = next(rate for name, rate in rows if "2018 winner" in name)
    table = "\n".join(f"| {name} | {rate:,.1f} | {rate / winner:.2f} |" for name, rate in rows)
    diffs = pixel_differences(args)
    diff_rows = "\n".join(f"| `{rule}` | {png_mean:.2f} | {png_max} | {jpg_mean:.2f} | {jpg_max} |"
                          for rule, (png_mean, png_max, jpg_mean, jpg_max) in diffs.items())
    decoder_rates = plane_decoders(args)
    decoders = "\n".join(f"| {name} | {rate:,.0f} |" for name, rate in decoder_rates)
    jpeg_decode = next(rate for name, rate in decoder_rates if name.endswith("M/8 >= 768 px (chosen)"))
    jpeg_luma = next(rate for name, rate in decoder_rates if "luma only" in name)
    luma = luma_error(args)
    luma_rows = "\n".join(f"| {color} | {mean:.2f} | {p99:.1f} | {level:.1f} |"
                          for color, (mean, p99, level) in sorted(luma.items()))
    rgb = [luma[c] for c in ("red", "green", "blue") if c in luma]
    luma_miss = (f"by {min(m / lv for m, _, lv in rgb):.2f}-{max(m / lv for m, _, lv in rgb):.2f} of their mean "
                 f"level on average, and by {min(p for _, p, _ in rgb):.0f}-{max(p for _, p, _ in rgb):.0f} levels "
                 f"at the 99th percentile") if rgb else "(no HPAv18 sample files)"
    default = sources.DEFAULT_RESAMPLE
    png_default = next(rate for name, rate in rows if name.startswith(f"Kaggle PNG 512 px, `read_sample` `{default}`"))
    jpeg_fast = next(rate for name, rate in rows if name.startswith("HPAv18 JPEG") and "`linear`" in name)
    jpeg_before = next(rate for name, rate in rows if name.startswith("HPAv18 JPEG") and "`lanczos`" in name)
    limits = {1: iterators[0][1], 2: iterators[1][1]}

    def limit(name):   # the copy limit with as many threads as the row's readers
        return limits[2 if "2 threads" in name or "2 reader processes" in name else 1]

    iterator_table = "\n".join(f"| {name} | {rate:,.0f} | {rate * mib(name):,.0f} | {rate / limit(name):.2f} |"
                               for name, rate in iterators)
    one_thread = dict(iterators)
    packed_1, packed_2 = one_thread["train: packed store, 1 thread"], one_thread["train: packed store, 2 threads"]
    per_core = {"packed store (`data.packed`)": packed_1,
                f"PNG decoding, `{default}` (the default rule)": one_thread["train: PNG decoding, 1 thread"],
                **{name.replace("`read_sample` ", ""): rate for name, rate in rows
                   if "`lanczos`" in name and name.startswith("Kaggle") or name.startswith("HPAv18") or
                   name.startswith("TIFF") and "`linear`" in name}}
    projection = "\n".join(f"| {name} | {rate:,.1f} | {math.ceil(H100_RATE * 8 / rate):,} |"
                            for name, rate in per_core.items())
    return f"""## input: decoding and packed reading, per thread and process

`python scripts/benchmark.py input` (`scripts/benchmark_input.py`) on {machine()}; took
{(time.perf_counter() - start) / 60:.1f} min.

### The training and validation iterators

Images per second of wall time delivered by `pipeline.train_batches` (batches of {args.batch} crops of
{CROP} px cut from {SIZE} px images, with their D4 codes: the transform itself runs in the jitted step)
and `pipeline.eval_batches` (whole {SIZE} px images, one pass over the set; a run's validations
read their passes from one iterator, `num_passes`), timed {args.seconds:g} s after the first batch (decoding: {4 * args.seconds:g} s), on the 101
Kaggle sample images packed at {SIZE} px by `hpa_jax.data.pack` (in the page cache) and decoded from
their PNGs with the default rule ({args.n} images); MiB/s is the pixels delivered. The copy limit
copies only each crop out of the memory map into a reused buffer, in a plain loop per thread.

| path | images/s | MiB/s | vs the copy limit (as many threads) |
|---|---|---|---|
{iterator_table}

The packed training iterator delivers {packed_1:,.0f} images/s on one thread ({packed_1 / limits[1]:.0%} of the
copy limit) and {packed_2:,.0f} on two ({packed_2 / limits[2]:.0%} of the two-thread limit, {packed_2 / packed_1:.2f}x one
thread): each batch's crops are copied once from
the memory map into a reused batch array (`pipeline.BatchBuffers`: a fresh 32 MiB array costs the
kernel's zeroing of every page, as much as the copy). Validation moves whole {SIZE} px images,
{(SIZE / CROP) ** 2:.2f}x the pixels of a training crop, so compare the MiB/s. Reader processes pay a pickling of
every batch into the training process: they pay off for decoding, not for a packed store (which
`data.num_workers="auto"` reads with threads alone).

### Cores for 8 H100s

`docs/scaling.md` puts one H100 at ~{H100_RATE:,} ResNet50 training images/s at 512 px, so 8 of them need
~{8 * H100_RATE:,} images/s from their host; the cores each path needs at its one-core rate here:

| path | images/s per core | cores for {8 * H100_RATE:,} images/s |
|---|---|---|
{projection}

### Decoding, one thread

Images per second of one reading thread's CPU time (a core's rate), the sample images in the page
cache, each read at 768 px then a 512 px crop copied out (the paper's sizes); the paths timed in
turn, the median of {args.passes} passes over {args.n} Kaggle PNG images, the 8 HPAv18 JPEG images, 4 TIFF images.

| path | images/s | vs the 2018 winner's reader |
|---|---|---|
{table}

The default rule (`data.resample="{default}"`) reads the Kaggle PNGs at {png_default / winner:.2f}x the
2018 winner's rate, the same pixels (OpenCV's INTER_LINEAR; tested), by decoding with OpenCV and
resizing the four channels in one call instead of four. HPAv18 JPEGs decoded at libjpeg's
reduced DCT scale (3/8 of 2048 px is exactly 768; 1728 px decodes at 4/8, 864 px, then shrinks
by area) run at {jpeg_fast / jpeg_before:.1f}x the full decode with PIL's Lanczos filter, {jpeg_fast / winner:.2f}x the
winner's PNG rate (issue 23 asks for 40 images/s per core, set when the winner's reader ran 131 here:
0.31x). That 40 is beyond libjpeg-turbo on this CPU: decoding the four files alone, at the reduced
scale and nothing else, runs at {jpeg_decode / 4:.1f} images/s per core (the decoders' table). Only the luma
plane would be faster ({jpeg_luma / 4:.1f} images/s, no chroma planes to transform and upsample), but it
is not the channel: against the colour decode (the table below) the red, green and blue
channels miss {luma_miss} (the other colours' bleed and the luma's rounding, scaled up by 1 / the weight),
so it is not offered. An HPAv18 set is decoded once by `hpa_jax.data.pack`; training reads the
packed store. Decoding dominates every fast path (a 4-channel resize took ~2 ms of a PNG image's ~12 ms
when the libraries were chosen); rates on this shared 2-core machine vary by ~20% from run to run.

### Pixels of each rule against `lanczos` (the rule before OpenCV's)

Absolute difference in grey levels, mean over pixels and images (max), every sample image at
768 px: the 101 Kaggle PNGs enlarged from 512, the 8 HPAv18 JPEGs reduced from 2048/1728.

| rule | PNG mean | PNG max | JPEG mean | JPEG max |
|---|---|---|---|---|
{diff_rows}

`cubic` is the closest to `lanczos`; `linear` (the default) is the 2018 winner's resize and as far
from `lanczos` as PIL's `bilinear`; on the JPEGs all rules are within a grey level on average.
Packed stores record the rule (`meta.json`) and training refuses one packed with another rule
than `data.resample`; `check` decodes without resizing, `stats` and `pack` take `--resample`.

### The decoders (files per second of one thread)

| decoder | files/s |
|---|---|
{decoders}

The luma-only reading of each HPAv18 channel file (its Y plane over the channel's weight in Y)
against the colour decode, grey levels at 768 px over the 8 sample sets:

| channel | mean abs. difference | 99th percentile | channel's mean level |
|---|---|---|---|
{luma_rows}

Chosen: OpenCV (`opencv-python-headless`) for PNGs and for resizing: the fastest PNG decoder
measured (pyspng, measured while choosing, ran at the same rate but skips the checksums of the
image data, so it accepts damaged files PIL refuses), PIL's pixels bit for bit, and the resize
the 2018 winner used. simplejpeg (libjpeg-turbo) for JPEGs: at full size PIL's pixels bit for bit,
and the only one of the three whose reduced decode takes libjpeg-turbo's M/8 factors (PIL's
`draft` and OpenCV's `IMREAD_REDUCED_*` stop at 1/2, 1/4, 1/8: 1024 px for a 2048 px file at
768); PyTurboJPEG needs the system's libturbojpeg, which pip cannot install. Both decoders leave
any file they refuse (or might read otherwise than PIL) to PIL, which decodes it or names its
problem as before. OpenCV's own thread pool is set to one thread when the readers first use it:
at these sizes it added no speed here, and grain already runs a reader per thread and process.
"""


def main(argv=None):
    area_main("input", add_arguments, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
