"""A checkpoint written and restored gives bit-identical params and the same evaluation."""

import jax
import numpy as np

from hpa_jax.evaluation import inference
from hpa_jax.runtime import checkpoint, sharding
from hpa_jax.models import create_model_from_config
from hpa_jax.training.loop import make_train_step
from test_train_step import initial_state, tiny_config


def test_restore_is_bit_identical(tmp_path):
    config = tiny_config()
    mesh = sharding.make_mesh()
    model = create_model_from_config(config)
    state = initial_state(config, mesh)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 32, 32, 4), dtype=np.uint8)
    labels = (rng.random((16, 28)) < 0.2).astype(np.uint8)
    state, _ = make_train_step(config, mesh)(state, *sharding.put_batch(mesh, (images, labels)), jax.random.key(1))
    (tmp_path / "config.json").write_text(config.to_json_best_effort())

    manager = checkpoint.checkpoint_manager(tmp_path, keep=2)
    checkpoint.save(manager, 1, state, {checkpoint.BEST_METRIC: 0.5})
    manager.wait_until_finished()

    _, _, restored, step = inference.restore_variables(config, tmp_path, "latest")
    assert step == 1
    saved = {"params": state.params, "batch_stats": state.batch_stats}
    flat_saved = jax.tree_util.tree_leaves_with_path(saved)
    flat_restored = jax.tree.leaves(restored)
    assert len(flat_saved) == len(flat_restored)
    for (path, a), b in zip(flat_saved, flat_restored):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b)), jax.tree_util.keystr(path)

    predict = inference.make_predict_step(model, config, mesh)
    test_images = sharding.put_batch(mesh, rng.integers(0, 256, (16, 32, 32, 4), dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(predict(saved, test_images)), np.asarray(predict(restored, test_images)))


def test_keeps_last_n_the_best_and_cycle_ends(tmp_path):
    """orbax's preservation policy keeps the last `keep` steps, the best-scoring one and the
    given cycle-end steps."""
    manager = checkpoint.checkpoint_manager(tmp_path, keep=2, keep_steps=[1])
    state = {"w": np.arange(3.0)}
    for step, f1 in enumerate([0.1, 0.9, 0.3, 0.2, 0.4], start=1):
        checkpoint.save(manager, step, state, {checkpoint.BEST_METRIC: f1})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [1, 2, 4, 5]
    reader = checkpoint.checkpoint_manager(tmp_path, must_exist=True)
    assert checkpoint.resolve_step(reader, "best") == 2
    assert checkpoint.resolve_step(reader, "latest") == 5


def test_mid_epoch_checkpoints_do_not_evict_epochs_and_only_the_newest_stays(tmp_path):
    """Mid-epoch checkpoints (no metrics, a progress record) neither count towards the last
    `keep` epochs nor evict the best or cycle-end ones, and each goes once a newer one is saved."""
    manager = checkpoint.checkpoint_manager(tmp_path, keep=2, keep_steps=[4])
    state = {"w": np.arange(3.0)}
    epoch_f1 = {2: 0.9, 4: 0.1, 6: 0.2, 8: 0.3, 10: 0.4}          # epochs of 2 steps; odd steps are mid-epoch
    for step in range(1, 12):
        if step in epoch_f1:
            checkpoint.save(manager, step, state, {checkpoint.BEST_METRIC: epoch_f1[step]})
        else:
            checkpoint.save(manager, step, state, None, {"epoch": step // 2, "batches_done": 1,
                                                         "iterator": {"next_index": 1}})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 4, 8, 10, 11]       # best, cycle end, last 2 epochs, newest
    reader = checkpoint.checkpoint_manager(tmp_path, must_exist=True)
    assert checkpoint.resolve_step(reader, "best") == 2 and checkpoint.resolve_step(reader, "latest") == 11
    assert checkpoint.restore_progress(reader, 11) == {"epoch": 5, "batches_done": 1, "iterator": {"next_index": 1}}
    assert checkpoint.restore_progress(reader, 10) is None
    np.testing.assert_array_equal(checkpoint.restore(reader, 11, state)["w"], state["w"])


def test_checkpoints_written_before_named_items_still_restore(tmp_path):
    """A run checkpointed as one unnamed orbax item (before mid-epoch checkpoints) restores, has no
    progress record, keeps its best step, and can be resumed with mid-epoch checkpoints."""
    import orbax.checkpoint as ocp

    state = {"w": np.arange(3.0)}
    options = ocp.CheckpointManagerOptions(best_fn=lambda m: m[checkpoint.BEST_METRIC], best_mode="max")
    old = ocp.CheckpointManager(tmp_path / "checkpoints", options=options)
    old.save(3, args=ocp.args.StandardSave(state), metrics={checkpoint.BEST_METRIC: 0.5})
    old.wait_until_finished()

    manager = checkpoint.checkpoint_manager(tmp_path)
    assert checkpoint.resolve_step(manager, "best") == 3 and checkpoint.restore_progress(manager, 3) is None
    np.testing.assert_array_equal(checkpoint.restore(manager, 3, state)["w"], state["w"])
    checkpoint.save(manager, 4, {"w": state["w"] + 1}, None, {"epoch": 1, "batches_done": 1, "iterator": {}})
    manager.wait_until_finished()
    assert checkpoint.restore_progress(manager, 4)["batches_done"] == 1
    np.testing.assert_array_equal(checkpoint.restore(manager, 4, state)["w"], state["w"] + 1)


def test_best_metric_chooses_what_best_means(tmp_path):
    """Five epochs whose three validation figures disagree: 'best' (for the reader too, which is
    given no config) is the highest macro-F1, the highest fitted macro-F1 or the lowest loss, as
    `checkpoint.best_metric` says; an unknown metric is a one-line ConfigError of the config's check."""
    import pytest
    from hpa_jax.config.validate import validate
    from hpa_jax.errors import ConfigError

    epochs = {1: (0.20, 0.40, 0.30), 2: (0.35, 0.45, 0.25), 3: (0.30, 0.55, 0.22),
              4: (0.25, 0.50, 0.18), 5: (0.28, 0.52, 0.21)}     # step: (macro-F1, fitted, loss)
    expected = {"val_macro_f1": 2, "val_macro_f1_fitted": 3, "val_loss": 4}
    for metric, best in expected.items():
        manager = checkpoint.checkpoint_manager(tmp_path / metric, keep=1)
        for step, (f1, fitted, loss) in epochs.items():
            record = {"val_macro_f1": f1, "val_macro_f1_fitted": fitted, "val_loss": loss}
            checkpoint.save(manager, step, {"w": np.arange(3.0)}, checkpoint.epoch_metrics(record, metric))
        manager.wait_until_finished()
        assert sorted(manager.all_steps()) == sorted({best, 5})               # the best and the last kept
        reader = checkpoint.checkpoint_manager(tmp_path / metric, must_exist=True)
        assert checkpoint.resolve_step(reader, "best") == best
        assert checkpoint.candidates(reader, "best")[0] == best
    config = tiny_config()
    config.checkpoint.best_metric = "f1"
    with pytest.raises(ConfigError, match="checkpoint.best_metric='f1': expected one of val_macro_f1, "):
        validate(config)
