"""The experiment configs shipped with the package, found by name from anywhere.

In the checkout the configs are `configs/*.py`; a built wheel carries the same files as the
package `hpa_jax.configs` (pyproject.toml maps that package to `configs/`). So that the documented commands work
unchanged outside the checkout, a `--config` naming a file that does not exist, such as
`configs/quickstart.py` (or just `quickstart`), is taken from the installed package when it
ships a config of that name. `hpa-jax-configs` prints where they are and their names: copy one
to change it, or override fields on the command line.
"""

import importlib.util
import pathlib
import sys
from types import ModuleType

import hpa_jax


def configs_dir() -> pathlib.Path:
    """The folder of the shipped configs: `hpa_jax/configs` in an installed wheel, the checkout's
    `configs/` beside the package otherwise."""
    package = pathlib.Path(hpa_jax.__file__).resolve().parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def load(name: str) -> ModuleType:
    """The shipped config module `name` (e.g. "resnet50"), for a config that builds on another:
    `resnet50 = shipped.load("resnet50")` then `resnet50.get_config(setup)`. Loaded from its file,
    so it works the same in the checkout and in an installed wheel."""
    path = configs_dir() / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hpa_jax_config_{name}", path)
    if spec is None or not path.is_file():
        raise FileNotFoundError(f"{path}: no shipped config {name!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def list_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve(value: str) -> str:
    """A `--config` value (`PATH` or `PATH:ARGS`, ml_collections' form) with PATH replaced by the
    shipped config of the same name when PATH is not a file and such a config exists."""
    path, sep, args = value.partition(":")
    if pathlib.Path(path).expanduser().is_file():
        return value
    name = pathlib.Path(path).name
    shipped = configs_dir() / (name if name.endswith(".py") else f"{name}.py")
    return f"{shipped}{sep}{args}" if shipped.is_file() else value


def resolve_argv(argv: list[str], flag: str = "--config") -> list[str]:
    """`argv` with the value of `--config=...` / `--config ...` resolved (see `resolve`)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith(flag + "="):
            out[i] = f"{flag}={resolve(arg[len(flag) + 1:])}"
        elif arg == flag and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out


def cli() -> None:
    """`hpa-jax-configs`: where the shipped configs are, and their names."""
    del sys.argv[1:]
    folder = configs_dir()
    print(f"{folder}\n" + "\n".join(f"  {name}" for name in list_configs()))
