"""Test setup: 8 simulated CPU devices (before jax is imported) and the shared real data."""

import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA's CPU compiler is the slowest part of these tests; a persistent compilation cache lets
# tests (and the command-line runs they start, which inherit the environment) that build the
# same programs compile them once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "hpa_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# As hpa_jax.main sets it: XLA compiles the models' random initialisers ~4x faster.
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data beside the repository; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real HPA sample data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """`make(num_train)`: a `PackedSource` of that many synthetic 32 px fields, packed as the fast
    training path reads them, with random labels."""
    import numpy as np
    import pandas as pd

    from hpa_jax.data import pack, pipeline, synthetic

    def make(num_train: int):
        root = synthetic.generate(tmp_path_factory.mktemp("synthetic"), num_train=num_train, num_test=1,
                                  image_size=32)
        frame = pd.read_csv(root / "train.csv", dtype=str)
        store = pack.pack_folder(root / "train", frame["Id"], root / "packed", progress=False)
        labels = np.random.default_rng(0).integers(0, 2, (len(frame), 28), dtype=np.uint8)
        return pipeline.PackedSource(store, frame["Id"], labels)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
    """A finished training run (2 epochs of 3 steps, a width-8 ResNet18 on 32 px synthetic fields,
    `data.image_size=32`): config.json, checkpoints, metrics.jsonl and tensorboard/, as a user's
    run folder is; for the tests of what reads a run."""
    from hpa_jax.training import loop as train
    from test_pipeline_state import run_config

    root = tmp_path_factory.mktemp("tiny_run")
    config = run_config(root)                  # 2 epochs of 3 steps on 32 px fields
    config.data.image_size = 32                # recorded in config.json: every predicted image is resized to it
    config.checkpoint.every_steps = 0
    train.train_and_evaluate(config, root / "run")
    return root / "run"
