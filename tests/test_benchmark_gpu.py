"""`scripts/benchmark.py gpu` at CPU size (`--tiny`) on the 8 simulated devices: the configs asked
for get a measured row, and so does every comparison the GPU report makes. One config (GapNet-PL,
the cheapest to compile) keeps the test short; every paper config trains a step on 8 and 16
devices in `scripts/benchmark.py collectives` (docs/performance.md)."""

import pathlib
import sys

from hpa_jax.reporting.performance import table_rows

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))   # the benchmark scripts are not a package

import benchmark_gpu  # noqa: E402


def rate(row: str, column: int) -> float:
    """The number in cell `column` (from 0) of a Markdown table row (thousands separators allowed)."""
    return float(row.strip("|").split("|")[column].strip().replace(",", ""))


def section(text: str, heading: str) -> list[str]:
    """The rows of the table of subsection `### heading...`."""
    return table_rows(text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0])


def test_tiny_gpu_benchmark_reports_every_measurement(tmp_path):
    doc = tmp_path / "perf.md"
    benchmark_gpu.main(["--tiny", "--configs", "gapnet", "--reference", "quickstart", "--skip_grouped",
                        "--doc", str(doc)])
    text = doc.read_text()
    assert "<!-- benchmark:gpu -->" in text and "<!-- /benchmark:gpu -->" in text
    assert "on 8 x cpu" in text and "--tiny" in text                  # the device it ran on, and that it was tiny
    assert "failed" not in text

    configs = section(text, "The paper's configs")
    assert [row.split("|")[1].strip() for row in configs] == ["gapnet"]
    assert all(rate(row, 2) > 0 and rate(row, 3) > 0 for row in configs)         # images/s, step ms
    assert all(row.rstrip(" |").endswith("?") for row in configs)                # no bfloat16 peak known for a CPU
    assert "gapnet_pl width 8, 32 px, 2" in text

    assert section(text, "SE-ResNeXt50's grouped") == ["| left out (`--skip_grouped`) | | |"]

    pools = section(text, "The ResNet stem's max-pool")
    assert len(pools) == 2 and "custom gradient" in pools[0] and "select_and_scatter" in pools[1]
    assert all("2 x 16 x 16 x 8" in row and rate(row, 2) > 0 for row in pools)

    collective = section(text, "Gradient sum and BatchNorm")
    assert [tuple(c.strip() for c in row.split("|")[1:3]) for row in collective] == [
        ("`psum`", "`global`"), ("`psum`", "`device`"), ("`ordered`", "`global`"), ("`ordered`", "`device`")]
    assert all("2 x 8" in row and rate(row, 3) > 0 for row in collective)

    loops = section(text, "The training loop's overhead")
    assert len(loops) == 2 and all(row.startswith("| resnet18") for row in loops)
    assert all(rate(row, 2) > 0 and rate(row, 3) > 0 and row.rstrip(" |").endswith("%") for row in loops)

    inputs = section(text, "The input pipeline")
    assert len(inputs) == 2 and all(rate(row, 1) > 0 and rate(row, 2) > 0 for row in inputs)
    assert "of this host's cores" in text
