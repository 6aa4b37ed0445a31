"""A trained run on a folder of one's own fields, no CSV needed (`python -m hpa_jax.predict` is
its command line, which says what it writes).

The model, normalisation and reader options are the run's (`RUN/config.json`), restored and
applied by the same code as `--mode=predict` (`inference.restore_variables`, `make_predict_step`),
so the same image gets the same probabilities from both. Tiles of consecutive images share
batches, so a folder of small and full-size fields keeps the device busy either way. Nothing is
written until every image has been read: the maps are drawn into a hidden staging folder that
becomes `cams/` at the end, and is removed on an error."""

import collections
import pathlib
import shutil
import sys

import grain
import jax
import ml_collections
import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa_jax.cells import localise
from hpa_jax.cells.overlay import write_overlay
from hpa_jax.cells.segment import segment
from hpa_jax.classes import CLASS_NAMES
from hpa_jax.config import upgrade
from hpa_jax.config.validate import divisible
from hpa_jax.data import pipeline
from hpa_jax.data.masks import mask_name, read_masks, write_labels
from hpa_jax.errors import ConfigError, DataError
from hpa_jax.evaluation import inference
from hpa_jax.evaluation.ensemble import read_thresholds
from hpa_jax.evaluation.thresholds import apply_thresholds
from hpa_jax.explain import embeddings as embeddings_lib, gradcam, maps as cams_lib
from hpa_jax.folder import images as folder
from hpa_jax.reporting import outputs
from hpa_jax.runtime import sharding
from hpa_jax.workdir import Workdir

KAGGLE_SIZE = 512   # the Kaggle release's PNGs: a run that read its PNGs at their own size saw these


def run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The run's own config (`config.json`) brought up to today's fields and validated, as
    evaluate/predict take it (`hpa_jax.config.upgrade.training_config`)."""
    path = Workdir(workdir).config
    if not path.is_file():
        raise ConfigError(f"{path}: not found; --workdir must be a training run's folder (config.json, checkpoints/)")
    return upgrade.read(path)


def input_size(config, override: int = 0) -> tuple[int, str]:
    """(the side the model gets, why): `--size`, else the run's `data.image_size`, else the size
    of its training images (the synthetic dataset's, or the Kaggle PNGs' 512)."""
    if override:
        return override, "--size"
    if config.data.image_size:
        return int(config.data.image_size), "data.image_size of the run"
    if config.data.source == "synthetic":
        return int(config.data.synthetic.image_size), "the run's synthetic images"
    if config.data.format == "png":
        return KAGGLE_SIZE, "the Kaggle PNGs' size (the run read its images at their own size; --size to change)"
    raise ConfigError(f"the run read its {config.data.format} images at their own size (data.image_size=0), which "
                      f"config.json does not record: pass --size=N, the side of its training images")


def run_thresholds(workdir: pathlib.Path, config) -> tuple[np.ndarray, str]:
    """The run's fitted `thresholds.json` when it has one (`--mode=cv`), else `eval.threshold`."""
    path = Workdir(workdir).thresholds
    if path.is_file():
        return read_thresholds(path), str(path)
    return np.float32(config.eval.threshold), f"eval.threshold={config.eval.threshold}"


class _Image:
    """The tiles of one image seen so far: sums of probabilities and features, CAM canvas."""

    def __init__(self, item: folder.FolderImage):
        self.item, self.seen = item, 0
        self.probs = self.features = self.canvas = self.weight = None

    def add(self, tile: int, probs, features, cam) -> None:
        self.seen += 1
        self.probs = probs if self.probs is None else self.probs + probs
        if features is not None:
            self.features = features if self.features is None else self.features + features
        if cam is not None:   # pasted at feature-map resolution, overlaps averaged
            scale = cam.shape[-1] / self.item.tiles.shape[2]
            top, left = (int(round(v * scale)) for v in self.item.offsets[tile])
            if self.canvas is None:
                height = max(int(round(t * scale)) for t in self.item.offsets[:, 0]) + cam.shape[1]
                width = max(int(round(t * scale)) for t in self.item.offsets[:, 1]) + cam.shape[2]
                self.canvas = np.zeros((cam.shape[0], height, width), np.float32)
                self.weight = np.zeros((height, width), np.float32)
            self.canvas[:, top:top + cam.shape[1], left:left + cam.shape[2]] += cam
            self.weight[top:top + cam.shape[1], left:left + cam.shape[2]] += 1

    @property
    def done(self) -> bool:
        return self.seen == len(self.item.tiles)

    def result(self) -> dict:
        n = len(self.item.tiles)
        return {"index": self.item.index, "id": self.item.image_id, "image": self.item.image, "probs": self.probs / n,
                "features": None if self.features is None else self.features / n,
                "cam": None if self.canvas is None else self.canvas / np.maximum(self.weight, 1)}


def _read_in_order(source: folder.FolderSource, config):
    num_threads, num_workers, prefetch = pipeline.readers(config.data, source)
    return pipeline.read_ordered(grain.MapDataset.source(source), num_threads, prefetch, num_workers)


def unreadable(source: folder.FolderSource, config, progress: bool = True) -> dict[str, str]:
    """{Id: problem} of the images of `source` that cannot be read."""
    items = _read_in_order(source, config)
    try:
        return {item.image_id: item.problem for item in tqdm(items, total=len(source), desc="checking", unit="image",
                                                             dynamic_ncols=True, leave=False, disable=not progress)
                if item.problem}
    finally:
        items.close()


def predict_images(source: folder.FolderSource, variables, mesh, config, predict_step, explain_step=None):
    """Yields, image by image in order, {"index", "id", "image", "probs", "features", "cam"} for
    readable images (probabilities, features and maps averaged over its tiles) and {"index", "id",
    "problem"} for the others. Tiles of consecutive images share batches of `eval.batch_size`."""
    batch_size = config.eval.batch_size
    items = _read_in_order(source, config)
    open_images: dict[int, _Image] = {}
    queue: list[tuple[int, int]] = []    # (image index, tile) waiting for a batch
    pending = []    # batches queued on the devices, read back one batch later

    def dispatch(entries):
        device_batch = sharding.put_batch(mesh, padded([open_images[i].item.tiles[t] for i, t in entries],
                                                       batch_size))
        pending.append((entries, predict_step(variables, device_batch),
                        explain_step(variables, device_batch) if explain_step is not None else {}))

    def collect():
        entries, probs, extra = pending.pop(0)
        probs, extra = np.asarray(jax.device_get(probs)), jax.device_get(extra)
        for row, (i, t) in enumerate(entries):
            image = open_images[i]
            image.add(t, probs[row], extra["features"][row] if "features" in extra else None,
                      np.asarray(extra["cams"][row]) if "cams" in extra else None)
            if image.done:
                yield open_images.pop(i).result()

    try:
        for item in items:
            if item.problem:
                yield {"index": item.index, "id": item.image_id, "problem": item.problem}
                continue
            open_images[item.index] = _Image(item)
            queue += [(item.index, t) for t in range(len(item.tiles))]
            while len(queue) >= batch_size:
                dispatch(queue[:batch_size])
                queue = queue[batch_size:]
                if len(pending) > 1:
                    yield from collect()
        if queue:
            dispatch(queue)
        while pending:
            yield from collect()
    finally:
        items.close()


def padded(images, batch_size: int) -> np.ndarray:
    """A batch of `batch_size` holding `images` first, zeros after (their predictions are dropped)."""
    batch = np.zeros((batch_size, *images[0].shape), np.uint8)
    batch[:len(images)] = images
    return batch


class CellCrops:
    """Cell crops of consecutive fields predicted together in full batches of `batch_size`: a
    field holds a few cells, and a batch per field would mostly predict padding. `add` queues one
    field's crops with the `field` it belongs to; it and `flush` (at the end) return, in the
    order they came, the fields whose crops are all predicted, each with its crops' (n, C)
    probabilities. `predict` maps a full uint8 batch to its probabilities."""

    def __init__(self, predict, batch_size: int):
        self.predict, self.batch_size = predict, int(batch_size)
        self.fields = collections.deque()   # (field, its number of crops), not yet handed back
        self.waiting = []                   # crops not yet predicted
        self.done = np.zeros((0, len(CLASS_NAMES)), np.float32)   # rows predicted, not yet handed back

    def add(self, field, crops) -> list:
        self.fields.append((field, len(crops)))
        self.waiting.extend(crops)
        while len(self.waiting) >= self.batch_size:
            self._predict(self.batch_size)
        return self._ready()

    def flush(self) -> list:
        if self.waiting:
            self._predict(len(self.waiting))
        return self._ready()

    def _predict(self, n: int) -> None:
        chunk, self.waiting = self.waiting[:n], self.waiting[n:]
        self.done = np.concatenate([self.done, self.predict(padded(chunk, self.batch_size))[:n]])

    def _ready(self) -> list:
        ready = []
        while self.fields and self.fields[0][1] <= len(self.done):
            field, n = self.fields.popleft()
            ready.append((field, self.done[:n]))
            self.done = self.done[n:]
        return ready


def cell_labels(source: folder.FolderSource, index: int, image_id: str, masks) -> tuple[np.ndarray, np.ndarray]:
    """(the image at its own size, its cells' label image): the user's `{Id}_cells` mask from
    `masks` when given, else `cells.segment`'s; numbers above 65,535 (the 16-bit PNG's) renumbered."""
    from skimage.segmentation import relabel_sequential  # noqa: PLC0415 - only for such masks

    image = source.original(index)
    labels = read_masks(masks, image_id, image.shape[:2]).cells if masks else segment(image).cells
    if labels.max(initial=0) > np.iinfo(np.uint16).max:
        labels = relabel_sequential(labels)[0]
    return image, labels.astype(np.int32)


def top_predicted(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(n,) each row's most probable predicted class, -1 where none is predicted."""
    best = np.where(predicted, probs, -np.inf).argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    return np.where(predicted.any(axis=1), best, -1) if len(probs) else best


def cells_frame(image_id: str, cells: np.ndarray, boxes: np.ndarray, areas: np.ndarray, probs: np.ndarray,
                predicted: np.ndarray) -> pd.DataFrame:
    """One field's rows of `cells.csv`: Id, cell, x0, y0, x1, y1 (x1, y1 one past the box), area,
    one probability column per class, Predicted_names ("; "-separated)."""
    frame = pd.DataFrame({"Id": [image_id] * len(cells), "cell": np.asarray(cells, np.int64)})
    frame[["x0", "y0", "x1", "y1"]] = np.asarray(boxes, np.int64).reshape(-1, 4)
    frame["area"] = np.asarray(areas, np.int64)
    frame = pd.concat([frame, pd.DataFrame(np.asarray(probs, np.float32).reshape(-1, len(CLASS_NAMES)),
                                           columns=list(CLASS_NAMES))], axis=1)
    frame["Predicted_names"] = ["; ".join(CLASS_NAMES[c] for c in np.flatnonzero(row)) for row in predicted]
    return frame


def shown_classes(probs: np.ndarray, predicted: np.ndarray) -> list[int]:
    """The classes whose maps are drawn: the predicted ones, or the most probable one if none is."""
    chosen = np.flatnonzero(predicted)
    return [int(c) for c in chosen] if len(chosen) else [int(np.argmax(probs))]


def predictions_frame(ids, probs: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    """Id, Predicted_names ("; "-separated), Predicted (space-separated indices, as a Kaggle
    submission), then one probability column per class name."""
    chosen = [np.flatnonzero(row) for row in preds]
    frame = pd.DataFrame({"Id": list(ids),
                          "Predicted_names": ["; ".join(CLASS_NAMES[c] for c in row) for row in chosen],
                          "Predicted": [" ".join(str(c) for c in row) for row in chosen]})
    return pd.concat([frame, pd.DataFrame(np.asarray(probs, np.float32), columns=list(CLASS_NAMES))], axis=1)


def note(message: str) -> None:
    """Something the user asked for that was done another way (a missing optional package), as one
    line on standard error."""
    print(f"hpa_jax.predict: note: {message}", file=sys.stderr, flush=True)


def write_embeddings(out: pathlib.Path, predictions: pd.DataFrame, features, embedding_map: str, uns: dict) -> None:
    """`--embeddings`' files for the images of `predictions` (`predictions_frame`): embeddings.npz,
    probabilities.tsv (Id and the 28 class-named columns), the 2-D map (embeddings_{pca,umap}.png)
    and embeddings.h5ad (its obsm holds X_pca, and X_umap when drawn; `uns` the run's particulars)."""
    ids, probs = predictions["Id"].tolist(), predictions[list(CLASS_NAMES)].to_numpy(np.float32)
    embeddings_lib.save_embeddings(out / "embeddings.npz", ids, features)
    outputs.write_text(out / "probabilities.tsv", predictions[["Id", *CLASS_NAMES]].to_csv(sep="\t", index=False,
                                                                                          float_format="%.6g"))
    drawn = embeddings_lib.embedding_map(features, embedding_map)
    if drawn.note:
        note(drawn.note)
    embeddings_lib.plot_map(out / f"embeddings_{drawn.method}.png", drawn, probs)
    obsm = {"X_pca": drawn.coords if drawn.method == "pca" else embeddings_lib.pca_2d(features)[0]}
    if drawn.method == "umap":
        obsm["X_umap"] = drawn.coords
    missing = embeddings_lib.save_anndata(out / "embeddings.h5ad", ids, features, probs, predictions["Predicted_names"],
                                          predictions["Predicted"], obsm=obsm,
                                          uns={**uns, "embedding_map": drawn.method})
    if missing:
        note(missing)


def predict_folder(workdir, images, out, *, fit: str = "resize", size: int = 0, tta: bool = False,
                   cams: bool = False, cam_shifts: int = 4, embeddings: bool = False, embedding_map: str = "pca",
                   skip_bad: bool = False, checkpoint: str | None = None, batch_size: int = 0,
                   cells: bool = False, cell_route: str = "blend", masks=None, cell_crop: str = "field_scale",
                   progress: bool = True) -> dict:
    """Predicts every image set in `images` with the run in `workdir`; writes into `out` (see the
    module doc) and returns {"ids", "probs", "preds", "features", "skipped", "step", "size"}, and
    with `cells` "cells" (`cells.csv`'s frame) and "cell_scores" ({route: (rows, C)} of the routes run)."""
    workdir, images, out = pathlib.Path(workdir), pathlib.Path(images), pathlib.Path(out)
    if fit not in ("resize", "tile"):
        raise ConfigError(f"unknown --fit {fit!r}: expected resize or tile")
    if cell_route not in localise.ROUTES:
        raise ConfigError(f"unknown --cell_route {cell_route!r}: expected {', '.join(localise.ROUTES)}")
    if cell_crop not in localise.CROPS:
        raise ConfigError(f"unknown --cell_crop {cell_crop!r}: expected {' or '.join(localise.CROPS)}")
    if masks is not None and not pathlib.Path(masks).is_dir():
        raise DataError(f"{masks}: not a folder (--masks names a folder of {{Id}}_cells.png/.tif masks)")
    if embedding_map not in embeddings_lib.MAPS:
        raise ConfigError(f"unknown --embedding_map {embedding_map!r}: expected {' or '.join(embeddings_lib.MAPS)}")
    config = run_config(workdir)
    if tta:
        config.eval.tta = tuple(range(8))
    if batch_size:
        config.eval.batch_size = batch_size
    side, why = input_size(config, size)
    sets, bad = folder.scan(images)
    source = folder.FolderSource.from_config(config.data, images, sets, size=side, tile=fit == "tile")
    if bad and not skip_bad:   # read the others once (no model) to name every bad image in one line
        raise DataError(folder.problems_line(images, bad | unreadable(source, config, progress)))
    thresholds, threshold_source = run_thresholds(workdir, config)
    model, mesh, variables, step = inference.restore_variables(config, workdir, checkpoint or config.eval.checkpoint)
    divisible("eval.batch_size (--batch_size)", config.eval.batch_size, mesh.size)
    predict_step = inference.make_predict_step(model, config, mesh)
    cell_cams = cells and cell_route != "crop"
    if cams:
        gradcam.check_has_map(model, config.model.name)
    elif cell_cams:
        try:
            gradcam.check_has_map(model, config.model.name)
        except ConfigError as e:
            raise ConfigError(f"--cell_route={cell_route} needs class activation maps: {e}; "
                              f"--cell_route=crop does not") from None
    explain_step = (gradcam.make_explain_step(model, config, mesh, cams=cams or cell_cams, features=embeddings,
                                              cam_shifts=cam_shifts) if cams or embeddings or cell_cams else None)

    out.mkdir(parents=True, exist_ok=True)
    staging, cell_staging = out / ".cams-partial", out / ".cells-partial"
    for folder_, wanted in ((staging, cams), (cell_staging, cells)):
        if wanted:
            shutil.rmtree(folder_, ignore_errors=True)
    if cells:
        cell_staging.mkdir()
    results, skipped, cell_frames, cell_scores = [], dict(bad), [], {}
    crop_batches = CellCrops(lambda batch: np.asarray(jax.device_get(
        predict_step(variables, sharding.put_batch(mesh, batch))), np.float32), config.eval.batch_size)

    def finish_cells(image_id, image, labels, numbers, cam, crop):
        """A field's cells once its crops are predicted: their scores, label image, overlay and rows."""
        routes = {route: scores for route, scores in (("cam", cam), ("crop", crop))
                  if route == cell_route or cell_route == "blend"}
        cell_probs = localise.blend(cam, crop) if cell_route == "blend" else routes[cell_route]
        cell_preds = (apply_thresholds(cell_probs, thresholds, config.eval.force_one) if len(numbers)
                      else np.zeros(cell_probs.shape, bool))
        write_labels(cell_staging / mask_name(image_id, "cells"), labels)
        write_overlay(cell_staging / f"{image_id}_overlay.png", image_id, image, labels, numbers,
                      top_predicted(cell_probs, cell_preds))
        cell_frames.append(cells_frame(image_id, numbers, localise.boxes(labels, numbers),
                                       localise.areas(labels, numbers), cell_probs, cell_preds))
        for route, scores in routes.items():
            cell_scores.setdefault(route, []).append(scores)

    bar = tqdm(total=len(source), desc="predict", unit="image", dynamic_ncols=True, disable=not progress)
    try:
        for result in predict_images(source, variables, mesh, config, predict_step, explain_step):
            bar.update()
            if "problem" in result:
                skipped[result["id"]] = result["problem"]
                continue
            predicted = apply_thresholds(result["probs"][None], thresholds, config.eval.force_one)[0]
            if cams:
                maps = {c: result["cam"][c] for c in shown_classes(result["probs"], predicted)}
                cams_lib.write_cams(staging, result["id"], result["image"], maps, result["probs"], predicted)
            if cells:
                image, labels = cell_labels(source, result["index"], result["id"], masks)
                numbers = localise.cell_numbers(labels)
                cam = (localise.cam_scores(result["cam"], labels, numbers, result["probs"]) if cell_route != "crop"
                       else None)
                crops = []
                if cell_route != "cam":
                    scale = (localise.field_scale(image.shape[:2], side, fit == "tile") if cell_crop == "field_scale"
                             else None)
                    crops = localise.cell_crops(image, labels, numbers, side, resample=config.data.resample,
                                                scale=scale)
                for field, crop in crop_batches.add((result["id"], image, labels, numbers, cam), crops):
                    finish_cells(*field, crop)
            results.append((result["id"], result["probs"], predicted, result["features"]))
        for field, crop in crop_batches.flush() if cells else ():
            finish_cells(*field, crop)
        bar.close()
        if skipped and not skip_bad:
            raise DataError(folder.problems_line(images, skipped))
        if not results:
            raise DataError(f"{images}: no image could be read ({len(skipped)} skipped)")
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(cell_staging, ignore_errors=True)
        raise

    ids = [r[0] for r in results]
    probs = np.stack([r[1] for r in results])
    preds = np.stack([r[2] for r in results])
    frame = predictions_frame(ids, probs, preds)
    outputs.write_text(out / "predictions.csv", frame.to_csv(index=False, float_format="%.6f"))
    outputs.save_probs(out / "probs.npz", ids, probs)
    skipped_path = out / "skipped.csv"
    if skipped:
        outputs.write_text(skipped_path, pd.DataFrame({"Id": list(skipped), "problem": list(skipped.values())})
                           .sort_values("Id").to_csv(index=False))
    elif skipped_path.is_file():
        skipped_path.unlink()   # a previous run's list; this run skipped nothing
    features = None
    if embeddings:
        features = np.stack([r[3] for r in results])
        uns = {"model": config.model.name, "checkpoint_step": int(step), "class_names": np.asarray(CLASS_NAMES, str),
               "thresholds": np.broadcast_to(np.asarray(thresholds, np.float32), (len(CLASS_NAMES),)).copy(),
               "threshold_source": threshold_source, "input_size": side, "fit": fit, "tta": len(config.eval.tta)}
        write_embeddings(out, frame, features, embedding_map, uns)
    if cams:
        shutil.rmtree(out / "cams", ignore_errors=True)
        staging.replace(out / "cams")
    cell_frame = None
    if cells:
        cell_frame = pd.concat(cell_frames, ignore_index=True)
        outputs.write_text(out / "cells.csv", cell_frame.to_csv(index=False, float_format="%.6f"))
        shutil.rmtree(out / "cells", ignore_errors=True)
        cell_staging.replace(out / "cells")
        cell_scores = {route: np.concatenate(parts) for route, parts in cell_scores.items()}
    tiling = "tiles of" if fit == "tile" else "resized to"
    print(f"predict (step {step}): {len(ids)} images, {tiling} {side} px ({why}), TTA x{len(config.eval.tta)}, "
          f"thresholds {threshold_source} -> {out / 'predictions.csv'}"
          + (f"; skipped {len(skipped)} -> {skipped_path}" if skipped else "")
          + (f"; {len(cell_frame)} cells ({cell_route}, {'--masks' if masks else 'segmented'}) -> "
             f"{out / 'cells.csv'}" if cells else ""))
    result = {"ids": ids, "probs": probs, "preds": preds, "features": features, "skipped": skipped, "step": step,
              "size": side}
    return {**result, "cells": cell_frame, "cell_scores": cell_scores} if cells else result
