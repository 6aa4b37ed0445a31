"""TensorBoard: the event files a training run writes parse with TensorBoard's own reader and hold
the numbers of metrics.jsonl (per epoch) and of every step."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from hpa_jax.classes import class_slug


def read_events(folder):
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    accumulator.Reload()
    scalars = {tag: {e.step: e.value for e in accumulator.Scalars(tag)} for tag in accumulator.Tags()["scalars"]}
    return accumulator, scalars


def test_event_files_hold_the_metrics_of_the_run(tiny_run):
    accumulator, scalars = read_events(tiny_run / "tensorboard")
    assert sum(tag.startswith("val_f1/") for tag in scalars) == 28 and "val_f1/27_Rods_rings" in scalars
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4, 5, 6]
    for record in records:
        step = record["step"]
        # The epoch's train loss is the mean of its steps' losses (float32 in the event file).
        epoch_steps = range(step - 2, step + 1)
        assert np.mean([scalars["train/loss"][s] for s in epoch_steps]) == pytest.approx(record["train_loss"], rel=1e-6)
        assert scalars["train/epoch_loss"][step] == pytest.approx(record["train_loss"], rel=1e-6)
        assert scalars["train/lr"][step] == pytest.approx(record["lr"], rel=1e-6)
        assert scalars["val/loss"][step] == pytest.approx(record["val_loss"], rel=1e-6)
        assert scalars["val/macro_f1"][step] == pytest.approx(record["val_macro_f1"], rel=1e-6, abs=1e-7)
        for name in ("macro_f1_fitted", "macro_f1_cross_fitted"):
            assert scalars[f"val/{name}"][step] == pytest.approx(record[f"val_{name}"], rel=1e-6, abs=1e-7)
        for c, f1 in enumerate(record["val_per_class_f1"]):
            assert scalars[f"val_f1/{class_slug(c)}"][step] == pytest.approx(f1, rel=1e-6, abs=1e-7)
    # The config as text: the JSON of config.json, indented as a Markdown code block.
    text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text) == json.loads((tiny_run / "config.json").read_text())
