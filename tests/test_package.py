"""The installable package: a wheel built from the sources, installed into a fresh venv, trains the
quickstart's first epoch (shrunk as in test_cli) from a folder outside the checkout, with the
configs it ships.

The fresh venv gets the wheel alone (`--no-deps`); its dependencies are this interpreter's, the
tested set of requirements.txt, through a .pth file, so the test needs no index. `.ci/run`
installs the same wheel with its declared dependencies into a clean venv."""

import json
import pathlib
import shutil
import subprocess
import sys
import sysconfig

from test_cli import TINY

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd, ok=(0,)):
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode in ok, (result.stdout[-2000:], result.stderr[-3000:])
    return result


def test_wheel_in_a_fresh_venv_trains_the_quickstart_outside_the_checkout(tmp_path):
    source = tmp_path / "src"             # a copy, so that building leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "hpa_jax", source / "hpa_jax", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "configs", source / "configs", ignore=ignore)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", source, "-w",
        tmp_path / "dist", cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("hpa_jax-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip()
    (pathlib.Path(site) / "tested_requirements.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel,
        cwd=tmp_path)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    listing = run(venv / "bin" / "hpa-jax-configs", cwd=outside).stdout     # the shipped configs' folder
    assert listing.startswith(site) and "  quickstart\n" in listing, listing
    usage = run(venv / "bin" / "hpa-jax-predict", "--help", cwd=outside, ok=(0, 1))   # absl's --help exits with 1
    assert "--images" in usage.stdout, usage.stdout

    # The README's command, with the shipped configs/quickstart.py (there is no configs/ here).
    run(venv / "bin" / "hpa-jax", *TINY, f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}",
        "--workdir=runs/quickstart", "--mode=train", cwd=outside)
    records = [json.loads(line) for line in (outside / "runs/quickstart/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    assert any((outside / "runs/quickstart/tensorboard").iterdir())
