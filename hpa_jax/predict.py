"""`python -m hpa_jax.predict --workdir=RUN --images=DIR --out=OUT`: a trained run on a folder of
one's own fields, no CSV needed; the command line of `hpa_jax.folder.predict.predict_folder`.

Every `{Id}_{red,green,blue,yellow}.{png,tif,jpg}` set in DIR, of any size, is predicted with the
run's checkpoint and thresholds (`RUN/thresholds.json` when it has one, else its
`eval.threshold`); OUT gets `predictions.csv` (Id, predicted class names and indices, one
probability column per class), `probs.npz`, and on request `cams/` (`--cams`) and, with
`--embeddings`, `embeddings.npz`, `embeddings.h5ad` (AnnData), `probabilities.tsv` and the map
`embeddings_pca.png` or `embeddings_umap.png` (`--embedding_map`), and with `--cells` each
field's cells (`--masks`, else found by `hpa_jax.cells.segment`) labelled one by one: `cells.csv`
(Id, cell, x0, y0, x1, y1, area, one probability column per class, Predicted_names),
`cells/{Id}_cells.png` (the 16-bit label image whose numbers `cells.csv` uses) and
`cells/{Id}_overlay.png` (outlines coloured by each cell's top predicted class). An image with a missing or
unreadable channel file stops it with one line naming every such image, and nothing written,
unless `--skip_bad` (then `skipped.csv` lists them). Flags are read before jax is imported, so
`--help` is quick.
"""

from hpa_jax.folder.images import PATTERN

PROG = "hpa_jax.predict"


def define_flags() -> None:
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("workdir", None, "A training run's folder (config.json, checkpoints/, thresholds.json).")
    flags.DEFINE_string("images", None, f"Folder of {PATTERN} files, any size.")
    flags.DEFINE_string("out", None, "Folder for predictions.csv, probs.npz and, on request, cams/ and embeddings.")
    flags.DEFINE_enum("fit", "resize", ["resize", "tile"],
                      "resize: each image resized to the run's input size, as it was trained; tile: cut at its own "
                      "resolution into tiles of that size (overlapping to cover it), predictions averaged.")
    flags.DEFINE_integer("size", 0, "Input size; 0: the run's (data.image_size, or its training images' size).")
    flags.DEFINE_bool("tta", False, "Average the 8 flips and rotations (default: the run's eval.tta).")
    flags.DEFINE_bool("cams", False, "Class activation maps (Grad-CAM) of the predicted classes: OUT/cams/.")
    flags.DEFINE_integer("cam_shifts", 4, "Maps at this many times the encoder's resolution (averaged over the "
                         "image moved by 32/N px; N*N times the cost); 1: plain Grad-CAM.", lower_bound=1)
    flags.DEFINE_bool("embeddings", False, "Pooled encoder features: OUT/embeddings.npz, embeddings.h5ad (AnnData, "
                      "with each image's probabilities and predicted classes), probabilities.tsv and a 2-D map.")
    flags.DEFINE_enum("embedding_map", "pca", ["pca", "umap"],
                      "The 2-D map of --embeddings (implied when given): OUT/embeddings_pca.png, or "
                      "embeddings_umap.png where umap-learn is installed (else the PCA, with a note).")
    flags.DEFINE_bool("cells", False, "Per-cell labels: OUT/cells.csv, OUT/cells/{Id}_cells.png (label image) and "
                      "{Id}_overlay.png.")
    flags.DEFINE_enum("cell_route", "blend", ["cam", "crop", "blend"],
                      "--cells' scores: cam: each class's activation density in the cell relative to the densest "
                      "cell, times the image's probability; crop: the cell's padded square crop through the model; "
                      "blend: their mean.")
    flags.DEFINE_enum("cell_crop", "field_scale", ["field_scale", "fill"],
                      "--cell_route=crop|blend: a cell's square crop kept at the size the model sees the whole field "
                      "at, centred on black (field_scale), or resized to fill the input (fill; docs/cells.md).")
    flags.DEFINE_string("masks", None, "--cells: folder of the user's {Id}_cells.{png,tif,tiff} label images "
                        "(default: cells found by the embedded segmentation).")
    flags.DEFINE_bool("skip_bad", False, "Predict the readable images and list the others in OUT/skipped.csv.")
    flags.DEFINE_string("checkpoint", None, "best, latest, a step, or swa (--mode=swa's average); "
                        "default: the run's eval.checkpoint.")
    flags.DEFINE_integer("batch_size", 0, "Images (tiles) per batch; 0: the run's eval.batch_size.")
    flags.mark_flags_as_required(["workdir", "images", "out"])


def main(argv):
    from absl import app, flags  # noqa: PLC0415

    from hpa_jax.data.datasets import default_cache_dir  # noqa: PLC0415 - after flag parsing: importing jax is slow
    from hpa_jax.errors import one_line_errors  # noqa: PLC0415
    from hpa_jax.folder.predict import predict_folder  # noqa: PLC0415
    from hpa_jax.runtime import startup  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    startup.start_up(default_cache_dir() / "xla")
    with one_line_errors(PROG):
        predict_folder(f.workdir, f.images, f.out, fit=f.fit, size=f.size, tta=f.tta, cams=f.cams,
                       cam_shifts=f.cam_shifts, embeddings=f.embeddings or f["embedding_map"].present,
                       embedding_map=f.embedding_map, skip_bad=f.skip_bad, checkpoint=f.checkpoint,
                       batch_size=f.batch_size, cells=f.cells or f.masks is not None or any(
                           f[name].present for name in ("cell_route", "cell_crop")),
                       cell_route=f.cell_route, masks=f.masks, cell_crop=f.cell_crop)


def cli() -> None:
    """The `hpa-jax-predict` console script."""
    from hpa_jax import console  # noqa: PLC0415

    define_flags()
    console.run(main, __name__)


if __name__ == "__main__":
    cli()
