"""What every benchmark area shares: the repository's place, one line about the machine, and
timing by median (imported by scripts/benchmark.py and the areas that live in their own module)."""

import datetime
import os
import pathlib
import platform
import re
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere: the package is beside scripts/


def _read(path) -> str:
    try:
        return pathlib.Path(path).read_text()
    except OSError:
        return ""


def section_body(doc: pathlib.Path, name: str) -> str:
    """Section `name` of the document as last written ("" if it has none)."""
    match = re.search(rf"<!-- benchmark:{name} -->(.*?)<!-- /benchmark:{name} -->", _read(doc), flags=re.S)
    return match.group(1) if match else ""


def subsections(text: str) -> dict[str, str]:
    """`### heading` -> that subsection's text (heading line included), in order."""
    parts = re.split(r"(?m)^(?=### )", text)
    return {part.splitlines()[0]: part.strip() for part in parts if part.startswith("### ")}


def table_rows(text: str) -> list[str]:
    """The rows (`| ... |` lines below the first `|---` line) of the first table in `text`."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|---")), len(lines))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def merge_rows(old: list[str], new: list[str], key_cells: int = 1) -> list[str]:
    """`old` with each row whose first `key_cells` cells a `new` row shares replaced by it, the
    rest of `new` appended: rerunning some rows keeps the others (each says when it ran)."""
    def key(row):
        return tuple(cell.strip() for cell in row.split("|")[1:1 + key_cells])
    fresh = {key(row): row for row in new}
    merged = [fresh.pop(key(row), row) for row in old]
    return merged + [row for row in new if key(row) in fresh]


def when() -> str:
    """Today and the 1-minute load now, for a row measured now."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{datetime.date.today().isoformat()}, load {load:.1f}"


def machine() -> str:
    """One line: CPUs, CPU model, load, jax and its backend, Python, date (the numbers depend on all)."""
    import jax
    import numpy as np

    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs ({model}), 1-min load {load:.1f}, jax {jax.__version__} on "
            f"{jax.default_backend()}, numpy {np.__version__}, Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}")


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of `repeats` later calls) in seconds; the first includes compilation."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def timed_interleaved(fns, repeats: int) -> list[tuple[float, float]]:
    """`timed` for several functions at once, their later calls taken in turn (a, b, a, b, ...),
    so that a change of machine load between them moves all of them alike and their ratio holds.
    Each function is called once more untimed after its first call (a warm-up: PyTorch builds
    its kernels' plans on the second call)."""
    firsts = []
    for fn in fns:
        start = time.perf_counter()
        fn()
        firsts.append(time.perf_counter() - start)
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [(first, statistics.median(t)) for first, t in zip(firsts, times)]
