"""The class-activation-map figure of the docs: a run trained on the synthetic benchmark, run through
`python -m hpa_jax.predict --cams` on synthetic test fields of one class each (where the true
pattern is known: the heat of a Nucleoli field should sit on the nucleoli) and on real sample
images (Kaggle PNGs and an HPAv18 JPEG from ../shared/data).

    python -m hpa_jax.main --config=configs/quickstart.py --workdir=runs/quickstart16 --mode=train,evaluate \
        --config.loss.e_alpha=0 --config.loss.hard_sample_ratio=1 --config.model.head.pool=gap \
        "--config.model.head.layers=()"
    python scripts/cam_figure.py --workdir=runs/quickstart16 --out=docs/cams.png

Each panel pair is the protein (green) channel and the heat map of the true class (synthetic) or
of the most probable class (real) over the composite. Both kinds are predicted at 256 px
(`--synthetic_size`, `--real_size`): synthetic fields drawn at 256 px show more cells, each
somewhat larger, than the 128 px fields of training, and real 512 px fields resized to 256 have
cells about as many pixels across as those. Every position of the encoder's last feature map sees
most of a 128 px field, so on fields of the training size a map need not point at the pattern
(the network can find a class from anywhere); on larger fields it has to.
"""

import argparse
import pathlib
import tempfile

import matplotlib
import numpy as np
from PIL import Image

from hpa_jax.classes import CHANNELS, CLASS_NAMES, class_slug
from hpa_jax.data import synthetic
from hpa_jax.folder import predict as folder_predict

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SYNTHETIC_CLASSES = (2, 0, 23, 21)       # Nucleoli, Nucleoplasm, Mitochondria, Plasma membrane
REAL = (("hpa_kaggle_sample/train", "1ac2966a-bbb8-11e8-b2ba-ac1f6b6435d0", "png"),   # Nucleoli
        ("hpa_kaggle_sample/train", "001bcdd2-bbb2-11e8-b2ba-ac1f6b6435d0", "png"),   # Nucleoplasm
        ("hpa_kaggle_sample/train", "0abf5bb6-bbb0-11e8-b2ba-ac1f6b6435d0", "png"),   # Mitochondria
        ("hpav18_sample/raw_jpg", "10814_50_A1_1", "jpg"))                            # ER, 1728 px


def true_labels(shared: pathlib.Path) -> dict[str, str]:
    labels = {}
    for csv in (shared / "hpa_kaggle_sample" / "train.csv", shared / "hpav18_sample" / "train.csv"):
        for line in csv.read_text().splitlines()[1:]:
            image_id, target = line.split(",")
            labels[image_id] = ", ".join(CLASS_NAMES[int(t)] for t in target.split())
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a run trained on the synthetic benchmark")
    parser.add_argument("--out", default="docs/cams.png")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="the real sample data")
    parser.add_argument("--real_size", type=int, default=256)
    parser.add_argument("--synthetic_size", type=int, default=256)
    args = parser.parse_args()
    shared = pathlib.Path(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        fields, real = tmp / "synthetic", tmp / "real"
        fields.mkdir(), real.mkdir()
        for c in SYNTHETIC_CLASSES:
            field = synthetic.render_field([c], args.synthetic_size, np.random.default_rng([2026, c]))
            for i, color in enumerate(CHANNELS):
                Image.fromarray(np.ascontiguousarray(field[..., i])).save(fields / f"synthetic-{c:02d}_{color}.png")
        for folder, image_id, ext in REAL:
            for color in CHANNELS:
                name = f"{image_id}_{color}.{ext}"
                (real / name).write_bytes((shared / folder / name).read_bytes())
        synthetic_result = folder_predict.predict_folder(args.workdir, fields, tmp / "out_synthetic", cams=True,
                                                         size=args.synthetic_size)
        real_result = folder_predict.predict_folder(args.workdir, real, tmp / "out_real", cams=True,
                                                    size=args.real_size)
        labels = true_labels(shared)

        panels = []    # (folder, extension, Id, class whose map is shown, title, subtitle)
        for image_id, probs in zip(synthetic_result["ids"], synthetic_result["probs"]):
            c = int(image_id.split("-")[1])
            drawn = {p.stem for p in (tmp / "out_synthetic" / "cams" / image_id).iterdir()}
            shown = c if class_slug(c) in drawn else int(np.argmax(probs))
            panels.append((fields, "png", tmp / "out_synthetic", image_id, shown,
                           f"synthetic, true: {CLASS_NAMES[c]}", f"map: {CLASS_NAMES[shown]} ({probs[shown]:.2f})"))
        extension = {image_id: ext for _, image_id, ext in REAL}
        for image_id, probs, preds in zip(real_result["ids"], real_result["probs"], real_result["preds"]):
            shown = int(np.argmax(probs))     # drawn whether predicted or not (then as the top class)
            panels.append((real, extension[image_id], tmp / "out_real", image_id, shown,
                           f"real, true: {labels[image_id]}", f"map: {CLASS_NAMES[shown]} ({probs[shown]:.2f})"))

        fig, axes = plt.subplots(4, 4, figsize=(13, 13.6))
        for k, (source, ext, out, image_id, shown, title, subtitle) in enumerate(panels):
            heat = np.asarray(Image.open(out / "cams" / image_id / f"{class_slug(shown)}.png"))
            green = np.asarray(Image.open(source / f"{image_id}_green.{ext}").convert("RGB"))[..., 1]
            green = np.asarray(Image.fromarray(green).resize(heat.shape[1::-1], Image.Resampling.LANCZOS))
            ax_green, ax_heat = axes[k // 2, 2 * (k % 2)], axes[k // 2, 2 * (k % 2) + 1]
            ax_green.imshow(np.stack([np.zeros_like(green), green, np.zeros_like(green)], -1))
            ax_green.set_title(title, fontsize=8, loc="left")
            ax_heat.imshow(heat)
            ax_heat.set_title(subtitle, fontsize=8, loc="left")
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle(f"Grad-CAM of {pathlib.Path(args.workdir).name} (trained on synthetic fields): protein channel, "
                     "and the heat of one class over the composite", fontsize=10)
        fig.tight_layout()
        out_path = pathlib.Path(args.out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_path, dpi=60)
        # 256 colours: a third of the bytes, no visible change.
        picture = Image.open(out_path).convert("RGB")
        picture.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(out_path, optimize=True)
        print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
