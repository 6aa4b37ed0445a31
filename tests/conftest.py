"""Test setup: 8 simulated CPU devices (before jax is imported) and the shared real data."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    """../shared/data beside the repository; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real HPA sample data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


def pytest_configure(config):
    """XLA's CPU compiler is the slowest part of these tests; a persistent compilation cache
    lets tests that build the same programs (model init, train step) compile them once."""
    import tempfile

    import jax

    cache = os.environ.get("HPA_JAX_TEST_XLA_CACHE", os.path.join(tempfile.gettempdir(), "hpa_jax_test_xla_cache"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
