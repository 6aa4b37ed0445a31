"""TensorBoard event files of a training run, in `WORKDIR/tensorboard/`, beside `metrics.jsonl`.

People who train in JAX or PyTorch watch runs in TensorBoard; `metrics.jsonl` stays the record
the package itself reads. tensorboardX writes the files without TensorFlow. Only process 0
writes (every process sees the same losses and metrics), so a multi-host run has one set of
curves. A resumed run passes the step it resumed from as `purge_step`: TensorBoard then drops
what an earlier, interrupted process logged after that step, which the resumed run logs again.

Tags: `train/loss` and `train/lr` per step (the LR of the last layer group, as `metrics.jsonl`),
`train/epoch_loss`, `val/loss`, `val/macro_f1` and `val_f1/{cc}_{Class_name}` per epoch (at the
epoch's last step), and the config as text (`config`).
"""

import json

import jax

from hpa_jax.classes import NUM_CLASSES, class_slug
from hpa_jax.workdir import Workdir


class Summaries:
    """The run's TensorBoard writer; a no-op on processes other than 0 (or when `enabled` is False)."""

    def __init__(self, workdir, config, schedule, *, start_step: int = 0, enabled: bool | None = None):
        self.schedule = schedule
        self.writer = None
        if enabled is None:
            enabled = jax.process_index() == 0
        if not enabled:
            return
        from tensorboardX import SummaryWriter  # noqa: PLC0415 - only process 0 needs it

        self.writer = SummaryWriter(logdir=str(Workdir(workdir).tensorboard), purge_step=start_step or None,
                                    flush_secs=30)
        if not start_step:
            text = json.dumps(json.loads(config.to_json_best_effort()), indent=2)
            # Markdown: indented by four spaces, the JSON shows as a code block.
            self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def train_step(self, step: int, loss: float) -> None:
        """The loss of global step `step` (1-based: the state's step after it) and its LR."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", float(self.schedule(step - 1)), step)

    def epoch(self, record: dict) -> None:
        """One `metrics.jsonl` record: its losses, macro-F1 and per-class F1 at its step."""
        if self.writer is None:
            return
        step = record["step"]
        self.writer.add_scalar("train/epoch_loss", record["train_loss"], step)
        self.writer.add_scalar("val/loss", record["val_loss"], step)
        self.writer.add_scalar("val/macro_f1", record["val_macro_f1"], step)
        for name in ("val_macro_f1_fitted", "val_macro_f1_cross_fitted"):
            if name in record:
                self.writer.add_scalar(f"val/{name[len('val_'):]}", record[name], step)
        for c, f1 in zip(range(NUM_CLASSES), record["val_per_class_f1"], strict=True):
            self.writer.add_scalar(f"val_f1/{class_slug(c)}", f1, step)
        self.writer.flush()

    def __enter__(self) -> "Summaries":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
