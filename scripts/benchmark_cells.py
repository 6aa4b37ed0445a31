"""`scripts/benchmark.py cells`: per-cell labels from an image-level model, scored with the 2021
single-cell challenge's metric on synthetic fields whose truth is known; writes docs/cells.md.

1. A varied synthetic dataset (`data.synthetic.varied_cells`: each cell shows its own share of
   the field's classes, the field is labelled with their union, as HPA labels images) is generated
   once; its test split is held out (never trained on, never used to pick anything).
2. Per seed, README's quickstart recipe (`configs/quickstart.py`) trains on its training split with
   the image labels only, as the 2021 entrants had to.
3. `predict_folder(..., cells=True)` labels every cell of the held-out fields twice: cells found by
   the embedded segmentation, and the generator's true masks (`--masks`), which separates what the
   segmentation loses from what the routes do; the crop route runs with both `--cell_crop`s.
4. Each route (CAM, crop, blend) is scored by the per-cell mAP (`hpa_jax.cells.metric`: IoU >= 0.6
   matching, 28 classes and Negative) against two floors: every cell given its field's predicted
   probabilities (the same model without any per-cell step), and every cell given its field's true
   labels (a perfect image-level classifier that says nothing of cells).
5. The segmentation alone is scored on fresh varied fields at several sizes; the real Kaggle sample
   fields (no truth) are drawn with the cells found and labelled, not scored.

    python scripts/benchmark.py cells [--seeds 0 1 2] [--num_test 200] [--workdir runs/benchmark_cells]

Finished trainings are reused (a `trained` marker in their folder), so a rerun only predicts.
"""

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from hpa_jax.cells import localise
from hpa_jax.cells.matching import match, scores as segmentation_scores
from hpa_jax.cells.metric import MATCH_IOU, METRIC_CLASSES, NEGATIVE, field_hits, mean_average_precision, with_negative
from hpa_jax.cells.segment import segment
from hpa_jax.classes import CHANNELS, CLASS_NAMES
from hpa_jax.data import masks as masks_lib
from hpa_jax.data import synthetic
from hpa_jax.reporting.performance import machine, publish, run_main

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "hpa_kaggle_sample"
DOC = REPO / "docs" / "cells.md"
FLOOR, TRUE_LABELS = "floor: field's probabilities", "floor: field's true labels"
ROUTE_ROWS = ("cam", "crop fill", "crop field_scale", "blend fill", "blend field_scale")   # route, --cell_crop
ROWS = (*ROUTE_ROWS, FLOOR, TRUE_LABELS)
MASKS = ("segmented", "true masks")


def add_arguments(parser):
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--num_train", type=int, default=2000, help="training fields (quickstart's)")
    parser.add_argument("--num_test", type=int, default=200, help="held-out fields scored")
    parser.add_argument("--image_size", type=int, default=128, help="side of the synthetic fields")
    parser.add_argument("--override", action="append", default=[],
                        help="one more --config.X=Y for the training runs, as --override=--config.X=Y (repeatable)")
    parser.add_argument("--seg_sizes", type=int, nargs="+", default=[128, 512, 1024],
                        help="field sides at which the segmentation is scored")
    parser.add_argument("--seg_fields", type=int, default=64,
                        help="fields scored at 128 px (fewer at larger sizes, in proportion, at least 4)")
    parser.add_argument("--real", type=int, default=4, help="real sample fields drawn (0: none)")
    parser.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "benchmark_cells")
    parser.add_argument("--doc", type=pathlib.Path, default=DOC)


# ---- truth and scores -------------------------------------------------------------------------

def cell_truth(dataset: pathlib.Path) -> dict[str, dict[int, tuple[int, ...]]]:
    """{Id: {cell: its classes}} from a varied dataset's cells.csv (empty Target: Negative)."""
    frame = pd.read_csv(dataset / synthetic.CELLS_CSV, dtype=str, keep_default_na=False)
    truth: dict[str, dict[int, tuple[int, ...]]] = {}
    for image_id, cell, target in frame.itertuples(index=False):
        truth.setdefault(image_id, {})[int(cell)] = tuple(int(c) for c in target.split())
    return truth


def route_scores(result: dict, field_scale: np.ndarray, truth: dict) -> dict[str, np.ndarray]:
    """(rows, 28) scores per row of `ROWS` for `predict_folder`'s cells (rows of result["cells"];
    `result` of `--cell_crop=fill`, `field_scale` the crop route's scores with field-scale crops):
    the routes', their blends, the field's probabilities, and the field's true labels as 0/1."""
    frame = result["cells"]
    probs = dict(zip(result["ids"], result["probs"]))
    scores = {"cam": result["cell_scores"]["cam"], "crop fill": result["cell_scores"]["crop"],
              "crop field_scale": field_scale}
    for crop in localise.CROPS:
        scores[f"blend {crop}"] = localise.blend(scores["cam"], scores[f"crop {crop}"])
    scores[FLOOR] = np.stack([probs[i] for i in frame["Id"]]) if len(frame) else np.zeros((0, len(CLASS_NAMES)))
    field_labels = np.zeros((len(frame), len(CLASS_NAMES)), np.float32)
    for row, image_id in enumerate(frame["Id"]):
        field_labels[row, sorted(set().union(*truth[image_id].values()))] = 1
    scores[TRUE_LABELS] = field_labels
    return scores


def map_scores(result: dict, truth: dict, dataset: pathlib.Path, predicted_labels: pathlib.Path,
               scores: dict[str, np.ndarray]) -> dict[str, tuple[float, np.ndarray]]:
    """{row: (mAP, per-class AP)} of `scores` (rows of result["cells"]) over every predicted field,
    the predicted cells read from `predicted_labels` ({Id}_cells.png), the true ones from the dataset."""
    frame = result["cells"]
    hits, positives = [], np.zeros(len(METRIC_CLASSES), np.int64)
    order = []
    for image_id in result["ids"]:
        rows = np.flatnonzero(frame["Id"].to_numpy() == image_id)
        true = masks_lib.read_masks(dataset / synthetic.CELLS_FOLDER, image_id).cells
        pred = masks_lib.read_labels(predicted_labels / masks_lib.mask_name(image_id, "cells"), true.shape)
        field, counted = field_hits(true, truth[image_id], pred, frame["cell"].to_numpy()[rows], MATCH_IOU)
        hits.append(field)
        positives += counted
        order.append(rows)
    hits, order = np.concatenate(hits), np.concatenate(order)
    return {name: mean_average_precision(with_negative(s[order]), hits, positives) for name, s in scores.items()}


# ---- the runs ---------------------------------------------------------------------------------

def train(args, seed: int, cache: pathlib.Path) -> pathlib.Path:
    """README's quickstart recipe on the varied fields (reused when its `trained` marker is there)."""
    run = args.workdir / f"seed{seed}"
    if (run / "trained").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    seconds = run_main(["--config=configs/quickstart.py", f"--workdir={run}", "--mode=train", f"--config.seed={seed}",
                        "--config.data.synthetic.varied_cells=True", f"--config.data.synthetic.cache_dir={cache}",
                        f"--config.data.synthetic.num_train={args.num_train}",
                        f"--config.data.synthetic.num_test={args.num_test}",
                        f"--config.data.synthetic.image_size={args.image_size}", *args.override],
                       devices=1, cache=cache, cwd=REPO)
    (run / "trained").write_text(json.dumps({"seconds": seconds}))
    print(f"cells: trained seed {seed} in {seconds:.0f} s", file=sys.stderr)
    return run


def score_run(run: pathlib.Path, dataset: pathlib.Path, out: pathlib.Path) -> dict[str, dict]:
    """{mask source: {row: (mAP, per-class AP)}} of one trained run on the dataset's test fields."""
    from hpa_jax.folder.predict import predict_folder

    truth = cell_truth(dataset)
    found = {}
    for source, given in zip(MASKS, (None, dataset / synthetic.CELLS_FOLDER)):
        where = out / source.replace(" ", "_")
        result = predict_folder(run, dataset / "test", where, cells=True, cell_route="blend", masks=given,
                                cell_crop="fill", progress=False)
        scaled = predict_folder(run, dataset / "test", out / "field_scale", cells=True, cell_route="crop",
                                masks=given or where / "cells", cell_crop="field_scale", progress=False)
        scores = route_scores(result, scaled["cell_scores"]["crop"], truth)
        found[source] = map_scores(result, truth, dataset, where / "cells", scores)
    return found


def segmentation_rows(sizes, fields_at_128: int) -> list[dict]:
    """The embedded segmentation against fresh varied fields' true masks at each size."""
    rows = []
    for size in sizes:
        count = max(4, round(fields_at_128 * 128 / size))
        nuclei, cells, seconds = [], [], 0.0
        for index in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([size, index, 0xCE11]))
            field = synthetic.render_cells(synthetic.sample_labels(rng), size, rng)
            start = time.perf_counter()
            found = segment(field.image)
            seconds += time.perf_counter() - start
            nuclei.append(match(field.nuclei, found.nuclei, MATCH_IOU))
            cells.append(match(field.cells, found.cells, MATCH_IOU))
        rows.append({"size": size, "fields": count, "seconds": seconds / count,
                     "nuclei": segmentation_scores(nuclei), "cells": segmentation_scores(cells)})
    return rows


def real_figure(run: pathlib.Path, count: int, tmp: pathlib.Path, path: pathlib.Path, trained_size: int) -> str:
    """The first `count` real Kaggle sample fields (by Id) through `--cells`, their overlays in one
    figure at `path`; a line of Markdown, or why there is none."""
    if count <= 0:
        return ""
    if not (SHARED / "train.csv").is_file():
        return "The real sample fields are not drawn: `../shared/data/hpa_kaggle_sample` is not beside the repo."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from hpa_jax.folder.predict import predict_folder

    ids = sorted(pd.read_csv(SHARED / "train.csv")["Id"])[:count]
    folder = tmp / "real"
    folder.mkdir()
    for image_id in ids:
        for channel in CHANNELS:
            (folder / f"{image_id}_{channel}.png").symlink_to(SHARED / "train" / f"{image_id}_{channel}.png")
    result = predict_folder(run, folder, tmp / "real_out", cells=True, cell_route="blend", progress=False)
    columns = min(2, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(7.5 * columns, 6 * rows), squeeze=False)
    for ax, image_id in zip(axes.ravel(), ids):
        ax.imshow(np.asarray(Image.open(tmp / "real_out" / "cells" / f"{image_id}_overlay.png")))
        ax.axis("off")
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return (f"![real fields]({path.name})\n\n{count} real Kaggle sample fields (512 px, the first by Id): "
            f"{len(result['cells'])} cells found by the embedded segmentation, each outlined in the colour of "
            f"its top predicted class by seed {run.name[4:]}'s model. That model learnt on {trained_size} px synthetic "
            f"fields, so its classes say nothing about these cells; the figure shows what the segmentation "
            f"finds on real fields, where there is no truth to score it against.")


# ---- the report -------------------------------------------------------------------------------

def mean_sd(values) -> str:
    values = np.asarray(values, float)
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def class_figure(per_class: dict[str, np.ndarray], path: pathlib.Path) -> None:
    """Per-class AP (mean over seeds, segmented cells) of each route and the probability floor."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in range(len(METRIC_CLASSES)) if np.isfinite(per_class[FLOOR][c])]
    fig, ax = plt.subplots(figsize=(13, 4.2))
    names = [*ROUTE_ROWS, FLOOR]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(shown)) + (i - (len(names) - 1) / 2) * width, per_class[name][shown], width,
               label=name)
    ax.set_xticks(range(len(shown)), [f"{c} {METRIC_CLASSES[c]}" for c in shown], rotation=70, ha="right",
                  fontsize=7)
    ax.set_ylabel("per-cell AP")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=4)
    ax.set_title("Per-cell AP by class on held-out varied fields (segmented cells, mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args, found: dict[int, dict], per_class: dict[str, np.ndarray], segmentation: list[dict], real: str,
           seconds: float, counts: dict) -> str:
    seeds = sorted(found)
    lines = [
        "# Per-cell localisation, scored where the truth is known", "",
        f"Generated by `python scripts/benchmark.py cells` on {machine()}; {seconds / 60:.0f} min in all. "
        "What was run and how: the docstring of `scripts/benchmark_cells.py`.", "",
        f"Held-out fields: the test split of a varied synthetic dataset ({args.num_test} fields of "
        f"{args.image_size} px, {counts['cells']} true cells of which {counts['negative']} Negative). Each model: "
        f"the quickstart recipe trained on {args.num_train} fields of the same generator with their image labels "
        f"(seeds {', '.join(map(str, seeds))}). Score: the 2021 challenge's per-cell mAP (each predicted cell "
        f"matched to a true one at IoU >= {MATCH_IOU}, AP per class over all fields, the mean over the "
        f"{counts['classes']} classes that some true cell carries, Negative among them), mean ± sd over seeds.", "",
        "| cell scores | mAP, segmented cells | mAP, true masks | per seed (segmented / true) | "
        "minus the probability floor, per seed (segmented) |",
        "|---|---|---|---|---|",
    ]
    floor = [found[s]["segmented"][FLOOR][0] for s in seeds]
    for name in ROWS:
        seg = [found[s]["segmented"][name][0] for s in seeds]
        true = [found[s]["true masks"][name][0] for s in seeds]
        per_seed = ", ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(seg, true))
        gain = ", ".join(f"{a - b:+.3f}" for a, b in zip(seg, floor)) if name != FLOOR else ""
        label = {"cam": "CAM route", "crop fill": "crop route, `--cell_crop=fill`",
                 "crop field_scale": "crop route, `--cell_crop=field_scale`",
                 "blend fill": "blend (equal weights), fill", "blend field_scale": "blend, field_scale"}.get(name, name)
        lines.append(f"| {label} | {mean_sd(seg)} | {mean_sd(true)} | {per_seed} | {gain} |")
    best = max(ROUTE_ROWS, key=lambda name: np.mean([found[s]["segmented"][name][0] for s in seeds]))
    ahead = sum(found[s]["segmented"][best][0] > found[s]["segmented"][FLOOR][0] for s in seeds)
    change = per_class[best] - per_class[FLOOR]
    shown = [c for c in np.argsort(change) if np.isfinite(change[c])]
    name_of = lambda c: f"{METRIC_CLASSES[c]} ({per_class[FLOOR][c]:.2f} -> {per_class[best][c]:.2f})"  # noqa: E731
    lines += [
        "",
        f"The best per-cell scores on segmented cells are `{best}`: {ahead} of {len(seeds)} seeds above the "
        f"probability floor. By class (the figure, mean over seeds), it gains most on "
        f"{', '.join(name_of(c) for c in shown[::-1][:3])}, and loses most on "
        f"{', '.join(name_of(c) for c in shown[:3])}.",
    ]
    lines += [
        "",
        "- CAM route: each class's activation map averaged over the cell, relative to the densest cell, times "
        "the field's probability (`hpa_jax.cells.localise`). Crop route: the cell's padded square crop, other "
        "cells blacked out, through the same model, either resized to fill the model's input (`fill`) or kept "
        "at the scale the model sees whole fields at, centred on black (`field_scale`). Blend: the mean of the "
        "CAM and crop routes. Negative: 1 - the cell's highest class score.",
        "- Floor, field's probabilities: every cell of a field scored with the field's own predicted "
        "probabilities, which is all an image-level model says without a per-cell step. A route that does not "
        "beat it has learnt nothing about cells.",
        "- Floor, field's true labels: every cell given its field's true classes (1) and nothing else (0); a "
        "perfect image-level classifier. It still loses every cell that does not carry all of its field's "
        "classes, and it never finds a Negative cell.",
        "- With true masks the matching is exact, so the gap between the two columns is what the segmentation "
        "loses.",
        "",
        "![per-class AP](cells_classes.png)",
        "",
        "## The embedded segmentation",
        "",
        f"Scikit-image only, no downloaded weights (`hpa_jax.cells.segment`), against the true masks of fresh "
        f"varied fields at IoU >= {MATCH_IOU}: precision and recall of the objects pooled over the fields, F1, "
        f"the median IoU of the matched pairs, and the time a field (one core).",
        "",
        "| field side | fields | nuclei P / R / F1 | nuclei median IoU | cells P / R / F1 | cells median IoU | "
        "s a field |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in segmentation:
        n, c = row["nuclei"], row["cells"]
        lines.append(f"| {row['size']} px | {row['fields']} | {n['precision']:.3f} / {n['recall']:.3f} / "
                     f"{n['f1']:.3f} | {n['median_iou']:.3f} | {c['precision']:.3f} / {c['recall']:.3f} / "
                     f"{c['f1']:.3f} | {c['median_iou']:.3f} | {row['seconds']:.2f} |")
    if real:
        lines += ["", "## Real fields (shown, not scored)", "", real]
    return "\n".join(lines) + "\n"


def run(args) -> str:
    start = time.time()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache = args.workdir / "cache"
    dataset = synthetic.ensure_synthetic(cache, num_train=args.num_train, num_test=args.num_test,
                                         image_size=args.image_size, seed=0, varied_cells=True)
    truth = cell_truth(dataset)
    test_ids = pd.read_csv(dataset / "test_labels.csv", dtype=str)["Id"]
    tested = [classes for image_id in test_ids for classes in truth[image_id].values()]
    found, per_class = {}, {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = pathlib.Path(tmp)
        for seed in args.seeds:
            found[seed] = score_run(train(args, seed, cache), dataset, tmp / f"seed{seed}")
            print(f"cells: seed {seed}: " + ", ".join(f"{name} {found[seed]['segmented'][name][0]:.3f}"
                                                      for name in ROWS), file=sys.stderr)
        for name in ROWS:       # classes no true cell carries are NaN in every seed, and stay so
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_class[name] = np.nanmean([found[s]["segmented"][name][1] for s in args.seeds], axis=0)
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        class_figure(per_class, args.doc.with_name("cells_classes.png"))
        segmentation = segmentation_rows(args.seg_sizes, args.seg_fields)
        real = real_figure(args.workdir / f"seed{args.seeds[0]}", args.real, tmp, args.doc.with_name("cells.png"),
                           args.image_size)
    counts = {"cells": len(tested), "negative": sum(not c for c in tested),
              "classes": int(np.isfinite(per_class[FLOOR]).sum())}
    return report(args, found, per_class, segmentation, real, time.time() - start, counts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    publish(args.doc, "cells", run(args), whole=True)


if __name__ == "__main__":
    main()
