"""Files a run leaves for people and later steps, each written under a temporary name and
renamed into place: a killed run never leaves a truncated file that looks complete. With several
processes only the primary writes them (the others return the path it writes)."""

import json
import pathlib

import numpy as np

from hpa_jax.runtime.distributed import is_primary


def write_text(path, text: str) -> pathlib.Path:
    path = pathlib.Path(path)
    if not is_primary():
        return path
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path, obj) -> pathlib.Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def save_probs(path, ids, probs) -> pathlib.Path:
    """A prediction file as `hpa_jax.ensemble` reads it: `ids` (str) and `probs` (N, C) float32."""
    path = pathlib.Path(path)
    if not is_primary():
        return path
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, ids=np.asarray(ids, str), probs=np.asarray(probs, np.float32))
    tmp.replace(path)
    return path


def format_predicted(pred_row: np.ndarray) -> str:
    return " ".join(str(c) for c in np.flatnonzero(pred_row))


def write_submission(path, ids, preds) -> pathlib.Path:
    """Kaggle submission `Id,Predicted` (space-separated class indices), written whole."""
    rows = "".join(f"{image_id},{format_predicted(row)}\n" for image_id, row in zip(ids, np.asarray(preds)))
    return write_text(path, "Id,Predicted\n" + rows)
