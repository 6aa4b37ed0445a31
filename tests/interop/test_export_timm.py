"""`--format=timm`: timm's model loaded strictly with the exported state dict gives our logits
(timm's own head), and timm's encoder with the documented head (`torch_head`) gives them for the
paper's ACP head."""

import sys
import pathlib

import pytest

pytest.importorskip("timm", reason="timm (and torch) are not installed: pip install -r requirements-interop.txt, "
                                   "then these tests run")
pytest.importorskip("jax2onnx", reason="the export extra is not installed: pip install -r requirements-export.txt")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from test_export import pixels, random_run  # noqa: E402

from hpa_jax.export import timm_weights  # noqa: E402


@pytest.mark.parametrize("name,pool", [("resnet18", "gap"), ("resnet18", "acp"), ("inception_v4", "gap"),
                                       ("densenet121", "acp")])
def test_timm_loads_the_export_and_gives_our_logits(tmp_path, name, pool):
    size = 96 if name == "inception_v4" else 64
    run = random_run(tmp_path, name, pool, size, width=64)
    paths = timm_weights.export_timm(run, tmp_path)
    assert [p.name for p in paths] == ([timm_weights.FILE] if pool == "gap" else [timm_weights.FILE, timm_weights.HEAD_FILE])
    images = pixels(2, size)
    assert timm_weights.round_trip_exact(run, paths[0])
    assert timm_weights.check_timm(run, paths, images, run.reference(images)) < 1e-5
