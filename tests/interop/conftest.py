"""The tests here compare the encoders with timm's (`hpa_jax.models.timm_twin`): without torch and
timm every one of them skips, with this reason."""

import pytest

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                    "as .ci/run does")
pytest.importorskip("torch", reason="torch is not installed: pip install -r requirements-interop.txt")
