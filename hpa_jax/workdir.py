"""A run folder (`--workdir`) and every file in it, named in this one place.

Training writes the config it ran with, the folds, per-epoch metrics, TensorBoard events and
checkpoints; swa their average; evaluate, predict, cv, lr_find and plan add their results beside
them; cv keeps one run folder per fold inside its own. README's command-line table lists what each mode writes.
"""

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class Workdir:
    """The files of the run folder at `path`, by what they hold (nothing is created or read here)."""

    path: pathlib.Path

    def __init__(self, path):
        object.__setattr__(self, "path", pathlib.Path(path))

    # training
    @property
    def config(self) -> pathlib.Path:
        """The config the run was trained with; evaluate and predict take its model from here."""
        return self.path / "config.json"

    @property
    def folds(self) -> pathlib.Path:
        return self.path / "folds.csv"

    @property
    def metrics(self) -> pathlib.Path:
        """One JSON record per epoch (`metrics.jsonl`), the record the package reads."""
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> pathlib.Path:
        return self.path / "tensorboard"

    @property
    def training_curves(self) -> pathlib.Path:
        return self.path / "training_curves.png"

    # swa
    @property
    def averaged_checkpoint(self) -> pathlib.Path:
        """`--mode=swa`'s average of the run's last checkpoints, an orbax checkpoint folder laid out
        as `checkpoints/` is (one step); `eval.checkpoint=swa` restores it."""
        return self.path / "swa"

    @property
    def averaged_record(self) -> pathlib.Path:
        """What `--mode=swa` averaged (epochs, steps) and its BatchNorm pass, for people."""
        return self.path / "swa.json"

    # evaluate, predict, cv
    @property
    def eval_metrics(self) -> pathlib.Path:
        return self.path / "eval_metrics.json"

    @property
    def report(self) -> pathlib.Path:
        return self.path / "report.md"

    @property
    def per_class_f1_figure(self) -> pathlib.Path:
        return self.path / "per_class_f1.png"

    @property
    def thresholds_figure(self) -> pathlib.Path:
        return self.path / "thresholds.png"

    @property
    def thresholds(self) -> pathlib.Path:
        """Per-class thresholds fitted by `--mode=cv`; `hpa_jax.predict` applies them."""
        return self.path / "thresholds.json"

    @property
    def submission(self) -> pathlib.Path:
        return self.path / "submission.csv"

    @property
    def test_probs(self) -> pathlib.Path:
        return self.path / "test_probs.npz"

    @property
    def val_probs(self) -> pathlib.Path:
        return self.path / "val_probs.npz"

    @property
    def oof_probs(self) -> pathlib.Path:
        return self.path / "oof_probs.npz"

    def fold(self, k: int) -> "Workdir":
        """The run folder of fold `k` of `--mode=cv`."""
        return Workdir(self.path / f"fold{k}")

    # lr_find, plan
    @property
    def lr_find_table(self) -> pathlib.Path:
        return self.path / "lr_find.csv"

    @property
    def lr_find_figure(self) -> pathlib.Path:
        return self.path / "lr_find.png"

    @property
    def plan(self) -> pathlib.Path:
        return self.path / "plan.json"
