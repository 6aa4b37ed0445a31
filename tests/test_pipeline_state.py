"""Worker processes and process counts do not change the batches, and a run interrupted mid-epoch
continues from the global batch it stopped at: the same batches, the same final params and
metrics as a run that was never interrupted."""

import json
import shutil

import jax
import numpy as np
import pytest

from hpa_jax.evaluation import inference
from hpa_jax.runtime import checkpoint
from hpa_jax.training import loop as train
from hpa_jax.data import pipeline
from test_train_step import tiny_config


@pytest.fixture(scope="module")
def packed_source(synthetic_store):
    """A packed store of 40 synthetic 32 px fields."""
    return synthetic_store(40)


def epoch_batches(source, num_workers, **kwargs):
    return pipeline.train_batches(source, batch_size=4, crop_size=24, seed=3, epoch=2, num_threads=2, prefetch=2,
                                  num_workers=num_workers, **kwargs)


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_max_batches_ends_the_epoch_early_with_its_first_batches(packed_source):
    """`train.steps_per_epoch` (a trial or benchmark of a few steps) takes the first batches of
    the same epoch order, also resumed from a batch inside them."""
    reference = list(epoch_batches(packed_source, 0))
    assert_same_batches(list(epoch_batches(packed_source, 0, max_batches=3)), reference[:3])
    assert_same_batches(list(epoch_batches(packed_source, 0, max_batches=3, start_batch=1)), reference[1:3])
    assert_same_batches(list(epoch_batches(packed_source, 0, max_batches=50)), reference)
    assert pipeline.steps_per_epoch(40, 4, 3) == 3 and pipeline.steps_per_epoch(40, 4, 0) == 10


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterator_state_continues_the_epoch_and_workers_change_nothing(packed_source, num_workers):
    """Two worker processes give the batches (order, crops, flips, labels) of the threads-only
    pipeline; a fresh iterator given the JSON round trip of the state after 3 batches yields the
    other 7 batches."""
    reference = list(epoch_batches(packed_source, 0))
    assert len(reference) == 10

    batches = epoch_batches(packed_source, num_workers)
    seen, state = [], None
    try:
        for batch in batches:
            seen.append(batch)
            if len(seen) == 3:
                state = json.loads(json.dumps(batches.get_state()))
    finally:
        batches.close()
    assert_same_batches(seen, reference)

    resumed = epoch_batches(packed_source, num_workers)
    try:
        resumed.set_state(state)
        assert_same_batches(list(resumed), reference[3:])
    finally:
        resumed.close()


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shares_make_up_the_global_batches(packed_source, process_count):
    """P processes' shares of every global batch, put side by side in process order, are the one
    process's batches (train, from any start batch, and eval with its padding mask)."""
    reference = list(epoch_batches(packed_source, 0))
    for start in (0, 7):
        shares = [list(epoch_batches(packed_source, 0, start_batch=start, process_index=p,
                                     process_count=process_count)) for p in range(process_count)]
        joined = [{key: np.concatenate([share[b][key] for share in shares]) for key in reference[0]}
                  for b in range(len(shares[0]))]
        assert_same_batches(joined, reference[start:])

    whole = list(pipeline.eval_batches(packed_source, batch_size=12, num_threads=2))
    assert [int(b["mask"].sum()) for b in whole] == [12, 12, 12, 4]
    np.testing.assert_array_equal(np.concatenate([b["index"][b["mask"]] for b in whole]), np.arange(40))
    shares = [list(pipeline.eval_batches(packed_source, batch_size=12, num_threads=2, process_index=p,
                                         process_count=process_count)) for p in range(process_count)]
    for b, batch in enumerate(whole):
        for key in batch:
            np.testing.assert_array_equal(np.concatenate([share[b][key] for share in shares]), batch[key])


class CountingBatches:
    """Wraps the training loop's grain iterator to count the batches it draws and the states it is set to."""

    def __init__(self, batches, log):
        self.batches, self.log = batches, log

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.batches)
        self.log["drawn"] += 1
        return batch

    def set_state(self, state):
        self.log["set_state"].append(state)
        self.batches.set_state(state)

    def get_state(self):
        return self.batches.get_state()

    def close(self):
        self.batches.close()


def run_config(tmp_path):
    config = tiny_config()
    config.data.synthetic.num_train = 64       # 48 training images in 4 folds: 3 steps of 16 per epoch
    config.data.synthetic.num_test = 1
    config.data.synthetic.image_size = 32
    config.data.synthetic.cache_dir = str(tmp_path / "cache")
    config.data.num_folds = 4
    config.data.num_threads = 2
    config.train.batch_size = 16
    config.eval.batch_size = 16
    config.train.num_epochs = 2
    config.checkpoint.keep = 1
    config.checkpoint.every_steps = 2
    return config


def test_run_resumed_mid_epoch_equals_uninterrupted_run(tmp_path, monkeypatch):
    """A copy of a run's workdir taken right after its mid-epoch checkpoint at step 4 (one batch
    into epoch 2), which is what a run killed then leaves, resumes to the params and metrics the
    run itself ends with; the resumed epoch starts at its second batch and draws only its 2
    remaining batches."""
    real_save, real_batches = checkpoint.save, pipeline.train_batches

    def save_and_snapshot(manager, step, state, metrics, progress=None):
        real_save(manager, step, state, metrics, progress)
        if step == 4:
            manager.wait_until_finished()
            shutil.copytree(tmp_path / "full", tmp_path / "resumed")

    monkeypatch.setattr(checkpoint, "save", save_and_snapshot)
    train.train_and_evaluate(run_config(tmp_path), tmp_path / "full")
    monkeypatch.setattr(checkpoint, "save", real_save)

    manager = checkpoint.checkpoint_manager(tmp_path / "resumed", must_exist=True)
    # the mid-epoch checkpoint at step 2 went when epoch 1's (step 3) was saved; step 4 is the newest
    assert sorted(manager.all_steps()) == [3, 4]
    assert checkpoint.restore_progress(manager, 3) is None
    progress = checkpoint.restore_progress(manager, 4)
    assert (progress["epoch"], progress["batches_done"], len(progress["train_losses"])) == (1, 1, 1)
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 1

    log = {"drawn": 0, "set_state": [], "start_batch": []}

    def counting(*args, **kwargs):
        log["start_batch"].append(kwargs["start_batch"])
        return CountingBatches(real_batches(*args, **kwargs), log)

    monkeypatch.setattr(pipeline, "train_batches", counting)
    train.train_and_evaluate(run_config(tmp_path), tmp_path / "resumed")
    assert log == {"drawn": 2, "set_state": [], "start_batch": [1]}

    config = run_config(tmp_path)
    _, _, expected, expected_step = inference.restore_variables(config, tmp_path / "full", "latest")
    _, _, got, step = inference.restore_variables(config, tmp_path / "resumed", "latest")
    assert step == expected_step == 6
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def records(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]

    assert records("resumed") == records("full") and len(records("full")) == 2
    for run in ("full", "resumed"):    # a mid-epoch checkpoint goes once a newer one is saved
        steps = checkpoint.checkpoint_manager(tmp_path / run).all_steps()
        assert 6 in steps and not {2, 4} & set(steps)
