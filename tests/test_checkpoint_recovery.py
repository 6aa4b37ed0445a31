"""Drills for checkpoints that survive: a corrupt newest or best checkpoint falls back to a
readable one (moved aside, never deleted), an explicit corrupt step and a failed save are one
line, SIGTERM stops with a checkpoint that resumes exactly, and a save killed with SIGKILL is
never taken as complete. Each resumed run is compared with one uninterrupted run of the same
tiny config (`run_config`: 2 epochs of 3 steps, mid-epoch checkpoints every 2 steps): the same
metrics.jsonl records and bit-identical final parameters."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpa_jax.evaluation import inference, modes
from hpa_jax.runtime import checkpoint, preemption
from hpa_jax.training import loop as train
from hpa_jax.errors import CheckpointError, TrainingDiverged, TrainingInterrupted, one_line_errors
from test_pipeline_state import run_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def records(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def final_variables(config, workdir, which="latest"):
    _, _, variables, step = inference.restore_variables(config, workdir, which)
    return step, jax.tree.map(np.asarray, variables)


def assert_same_tree(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (`full/`) and a copy of its workdir right after the mid-epoch
    checkpoint at step 4 (`at4/`: checkpoints 3 and 4, one metrics record), what a run killed then
    leaves."""
    root = tmp_path_factory.mktemp("reference")
    real_save = checkpoint.save

    def save_and_snapshot(manager, step, state, metrics, progress=None):
        real_save(manager, step, state, metrics, progress)
        if step == 4:
            manager.wait_until_finished()
            shutil.copytree(root / "full", root / "at4")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "save", save_and_snapshot)
        train.train_and_evaluate(run_config(root), root / "full")
    config = run_config(root)
    return {"root": root, "config": config, "records": records(root / "full"),
            "final": final_variables(config, root / "full")}


def copy_of(reference, name, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(reference["root"] / name, workdir)
    return workdir


def array_files(step_dir):
    return [p for p in (step_dir / "default").rglob("*") if p.is_file() and "/d/" in p.as_posix()]


def truncate_largest_array_file(step_dir):
    largest = max(array_files(step_dir), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def truncate_every_array_file(step_dir):
    """What evaluate and predict notice: they read only the params and batch statistics, so a
    checkpoint whose damaged file holds only optimiser state still evaluates (correctly)."""
    for path in array_files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated array file": truncate_largest_array_file,
    "deleted metadata": lambda step_dir: (step_dir / "default" / "_METADATA").unlink(),
}


def warnings_in(text):
    return [line for line in text.splitlines() if line.startswith("hpa_jax: warning:")]


def assert_resumes_to_reference(reference, workdir):
    assert records(workdir) == reference["records"]
    step, variables = final_variables(reference["config"], workdir)
    assert step == reference["final"][0]
    assert_same_tree(variables, reference["final"][1])


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_falls_back_and_training_goes_on(reference, tmp_path, capsys, corruption):
    """The newest checkpoint (4) made unreadable: training warns once, moves it aside, resumes
    from step 3 and ends exactly as the uninterrupted run."""
    workdir = copy_of(reference, "at4", tmp_path)
    CORRUPTIONS[corruption](workdir / "checkpoints" / "4")
    capsys.readouterr()
    train.train_and_evaluate(reference["config"], workdir)
    out, err = capsys.readouterr()
    [warning] = warnings_in(err)
    assert "checkpoint step 4" in warning and str(workdir / "checkpoints" / "4") in warning
    assert "moved it to unreadable-4, using step 3" in warning and "Traceback" not in err
    assert "at step 3" in out
    assert (workdir / "checkpoints" / "unreadable-4" / "default").is_dir()       # kept, not deleted
    assert_resumes_to_reference(reference, workdir)
    assert (workdir / "checkpoints" / "unreadable-4").is_dir()                  # and never deleted since


def test_best_falls_back_to_the_next_best_readable(tmp_path, capsys):
    """'best' with the best checkpoint unreadable takes the next best (not the newest), warns once
    and never lists the unreadable one again; 'latest' is untouched by it."""
    manager = checkpoint.checkpoint_manager(tmp_path, keep=4)
    target = {"w": np.arange(4096.0)}            # large enough for its own data file (not inlined)
    for step, f1 in enumerate([0.1, 0.9, 0.5, 0.2], start=1):
        checkpoint.save(manager, step, {"w": target["w"] + step}, {checkpoint.BEST_METRIC: f1})
    checkpoint.wait(manager)
    truncate_largest_array_file(tmp_path / "checkpoints" / "2")

    reader = checkpoint.checkpoint_manager(tmp_path, must_exist=True)
    step, state, _ = checkpoint.restore_readable(reader, "best", target)
    assert step == 3
    np.testing.assert_array_equal(state["w"], target["w"] + 3)
    [warning] = warnings_in(capsys.readouterr().err)
    assert "checkpoint step 2" in warning and "unreadable-2, using step 3" in warning
    again = checkpoint.checkpoint_manager(tmp_path, must_exist=True)
    assert sorted(again.all_steps()) == [1, 3, 4] and checkpoint.candidates(again, "best") == [3, 4, 1]
    assert checkpoint.restore_readable(again, "latest", target)[0] == 4 and not warnings_in(capsys.readouterr().err)


def test_no_readable_checkpoint_is_one_line_and_moves_nothing(tmp_path):
    """With every checkpoint unreadable (or not fitting the config) nothing is moved: the error
    lists them and a later run with the right config still finds them."""
    manager = checkpoint.checkpoint_manager(tmp_path, keep=2)
    for step in (1, 2):
        checkpoint.save(manager, step, {"w": np.arange(8.0)}, {checkpoint.BEST_METRIC: 0.5})
    checkpoint.wait(manager)
    with pytest.raises(CheckpointError) as error:
        checkpoint.restore_readable(checkpoint.checkpoint_manager(tmp_path), "latest", {"w": jnp.arange(9.0)})
    message = str(error.value)
    assert "\n" not in message and "no readable checkpoint" in message and "step 2:" in message and "step 1:" in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]


def test_evaluate_best_falls_back_with_a_warning(reference, tmp_path, capsys):
    """`evaluate` with the best checkpoint (3, the only one with metrics) truncated scores the
    readable one, step 4, exactly as evaluating step 4 of an intact copy does."""
    workdir = copy_of(reference, "at4", tmp_path)
    truncate_every_array_file(workdir / "checkpoints" / "3")
    capsys.readouterr()
    result = modes.evaluate(reference["config"], workdir)
    [warning] = warnings_in(capsys.readouterr().err)
    assert result["checkpoint_step"] == 4 and "checkpoint step 3" in warning and "using step 4" in warning
    config = reference["config"]
    _, expected = final_variables(config, reference["root"] / "at4", 4)
    _, got = final_variables(config, workdir, "best")
    assert_same_tree(got, expected)


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_explicit_corrupt_step_is_one_line_and_exits_nonzero(reference, tmp_path):
    """`--config.eval.checkpoint=4` with step 4 truncated: one `hpa_jax: error:` line naming the
    folder, no traceback, exit 1, and nothing moved (the user asked for that step)."""
    workdir = copy_of(reference, "at4", tmp_path)
    truncate_every_array_file(workdir / "checkpoints" / "4")
    config = reference["config"]
    result = cli("-m", "hpa_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}", "--mode=evaluate",
                 "--config.eval.checkpoint=4", "--config.data.num_folds=4", "--config.eval.batch_size=16",
                 *[f"--config.data.synthetic.{k}={config.data.synthetic[k]}"
                   for k in ("num_train", "num_test", "image_size", "cache_dir")])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"hpa_jax: error: {workdir / 'checkpoints' / '4'}: checkpoint step 4 is unreadable: ")
    assert (workdir / "checkpoints" / "4").is_dir() and not (workdir / "eval_metrics.json").exists()


def test_sigterm_mid_epoch_saves_and_resumes_exactly(reference, tmp_path, monkeypatch):
    """SIGTERM arriving during step 5 (epoch 2, batch 2; no periodic checkpoint there): the step
    finishes, a mid-epoch checkpoint with the iterator's position is saved, training stops with
    `TrainingInterrupted`; the restarted run ends with the uninterrupted run's metrics and params."""
    real_make = train.make_train_step

    def make_train_step(*args, **kwargs):
        step_fn = real_make(*args, **kwargs)

        def step(state, *rest):
            if int(state.step) == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(state, *rest)

        return step

    workdir, handler_before = tmp_path / "run", signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train, "make_train_step", make_train_step)
    with pytest.raises(TrainingInterrupted) as stopped:
        train.train_and_evaluate(reference["config"], workdir)
    monkeypatch.setattr(train, "make_train_step", real_make)
    assert stopped.value.signum == signal.SIGTERM
    assert f"stopped by SIGTERM at step 5 (epoch 2, batch 2 of 3); saved {workdir / 'checkpoints' / '5'}" \
        in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) is handler_before                    # handler removed again
    manager = checkpoint.checkpoint_manager(workdir)
    assert checkpoint.restore_progress(manager, 5)["batches_done"] == 2 and len(records(workdir)) == 1

    train.train_and_evaluate(reference["config"], workdir)
    assert_resumes_to_reference(reference, workdir)


def test_first_ctrl_c_asks_to_stop_and_the_second_aborts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with preemption.StopOnSignal() as stop:
        assert not stop.should_stop(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.should_stop(2) and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_interrupted_training_exits_with_128_plus_the_signal(capsys):
    with pytest.raises(SystemExit) as exit_:
        with one_line_errors("hpa_jax"):
            raise TrainingInterrupted("stopped by SIGTERM at step 5", signal.SIGTERM)
    assert exit_.value.code == 143 and capsys.readouterr().err == "hpa_jax: stopped by SIGTERM at step 5\n"


def test_failed_save_is_one_line_and_keeps_the_older_checkpoints(reference, tmp_path, monkeypatch):
    """The disk fills during the save of step 6: training stops with one line naming the file, the
    checkpoints before it (3, 4) restore as they were saved, and a restart ends as the
    uninterrupted run did."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler

    real_write = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def disk_full_at_step_6(self, item, directory):
        if any(part.startswith("6.orbax-checkpoint-tmp") for part in pathlib.Path(directory).parts):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metrics"))
        return await real_write(self, item, directory)

    workdir = tmp_path / "run"
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_at_step_6)
    with pytest.raises(CheckpointError) as failed:
        train.train_and_evaluate(reference["config"], workdir)
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", real_write)
    message = str(failed.value)
    assert "\n" not in message and "6.orbax-checkpoint-tmp" in message
    assert "saving a checkpoint failed (No space left on device)" in message and "(steps: 3, 4)" in message

    manager = checkpoint.checkpoint_manager(workdir, must_exist=True)
    assert sorted(manager.all_steps()) == [3, 4]
    for step in (3, 4):
        assert_same_tree(final_variables(reference["config"], workdir, step)[1],
                         final_variables(reference["config"], reference["root"] / "at4", step)[1])
    train.train_and_evaluate(reference["config"], workdir)
    assert not list((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))   # the leftover is cleaned up
    assert_resumes_to_reference(reference, workdir)


KILL_DURING_COMMIT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from orbax.checkpoint._src.path import async_path
from hpa_jax.training import loop as train
from test_pipeline_state import run_config

real_rename = async_path.rename

async def rename(src, dst):
    if dst.name == "6":      # every file of step 6 written, the commit not yet made
        os.kill(os.getpid(), signal.SIGKILL)
    return await real_rename(src, dst)

async_path.rename = rename
train.train_and_evaluate(run_config(__import__("pathlib").Path({root!r})), {workdir!r})
"""


def test_kill_9_during_a_save_resumes_from_the_last_complete_one(reference, tmp_path, capsys):
    """A process killed with SIGKILL while committing the epoch-end save of step 6 (its metrics
    record already written) leaves only a temporary folder: the restart resumes from step 4, the
    last complete checkpoint, drops the orphaned metrics record and ends as the uninterrupted run."""
    workdir = tmp_path / "run"
    result = cli("-c", KILL_DURING_COMMIT.format(tests=str(REPO / "tests"), root=str(reference["root"]),
                                                 workdir=str(workdir)))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert len(records(workdir)) == 2 and list((workdir / "checkpoints").glob("6.orbax-checkpoint-tmp*"))
    assert sorted(checkpoint.checkpoint_manager(workdir).all_steps()) == [3, 4]

    capsys.readouterr()
    train.train_and_evaluate(reference["config"], workdir)
    assert "at step 4 (epoch 2, batch 1)" in capsys.readouterr().out
    assert not list((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
    assert_resumes_to_reference(reference, workdir)


def test_divergence_names_the_last_good_checkpoint_or_none(reference, tmp_path, monkeypatch):
    """A non-finite step 2 (before any checkpoint) says none was written yet; a non-finite step 6
    names step 4, the mid-epoch checkpoint before it."""
    real_make = train.make_train_step
    diverge_at = {}

    def make_train_step(*args, **kwargs):
        step_fn = real_make(*args, **kwargs)

        def step(state, *rest):
            done = int(state.step) + 1
            state, metrics = step_fn(state, *rest)
            return state, {**metrics, "finite": metrics["finite"] & jnp.asarray(done != diverge_at["step"])}

        return step

    monkeypatch.setattr(train, "make_train_step", make_train_step)
    for step, expected in ((2, "and no checkpoint was written yet in "),
                           (6, f"the last good checkpoint is step 4 in {tmp_path / 'at6' / 'checkpoints' / '4'}")):
        diverge_at["step"] = step
        with pytest.raises(TrainingDiverged) as diverged:
            train.train_and_evaluate(reference["config"], tmp_path / f"at{step}")
        assert f"non-finite loss or gradient at step {step} " in str(diverged.value)
        assert expected in str(diverged.value) and "None" not in str(diverged.value)


CTRL_C_TO_THE_GROUP = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from hpa_jax.training import loop as train
from hpa_jax.errors import one_line_errors
from test_pipeline_state import run_config

real_make = train.make_train_step

def make_train_step(*args, **kwargs):
    step_fn = real_make(*args, **kwargs)
    def step(state, *rest):
        if int(state.step) == 4:     # during step 5, to every process of the group, readers included
            os.killpg(0, signal.SIGINT)
        return step_fn(state, *rest)
    return step

train.make_train_step = make_train_step
config = run_config(__import__("pathlib").Path({root!r}))
config.data.num_workers = 2
with one_line_errors("hpa_jax"):
    train.train_and_evaluate(config, {workdir!r})
"""


def test_ctrl_c_to_the_process_group_with_reader_processes(reference, tmp_path):
    """A Ctrl-C in the terminal reaches the training process and its 2 grain reader processes:
    the readers leave it to training (no KeyboardInterrupt tracebacks of theirs), the command
    prints where it stopped and exits 130; the restart (finishing the epoch with the same 2
    readers) ends as the uninterrupted run."""
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", CTRL_C_TO_THE_GROUP.format(
        tests=str(REPO / "tests"), root=str(reference["root"]), workdir=str(workdir))], cwd=REPO,
        capture_output=True, text=True, timeout=600, start_new_session=True)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    # (grain's reader processes leave a resource_tracker warning about shared memory at any exit)
    stopped = [line for line in result.stderr.splitlines() if line.startswith("hpa_jax: stopped")]
    assert stopped == [f"hpa_jax: stopped by SIGINT at step 5 (epoch 2, batch 2 of 3); saved "
                       f"{workdir / 'checkpoints' / '5'}: run the same command to resume"]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr
    train.train_and_evaluate(reference["config"], workdir)
    assert_resumes_to_reference(reference, workdir)
