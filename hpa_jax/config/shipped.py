"""The experiment configs shipped with the package, found by name from anywhere.

In the checkout the configs are `configs/*.py`; an installed package carries the same files as
`hpa_jax.configs` (the package's `configs` is that folder). So that the documented commands work
unchanged outside the checkout, a `--config` naming a file that does not exist, such as
`configs/quickstart.py` (or just `quickstart`), is taken from the installed package when it
ships a config of that name. `hpa-jax-configs` prints where they are and their names: copy one
to change it, or override fields on the command line.
"""

import pathlib
import sys


def configs_dir() -> pathlib.Path:
    """The folder of the shipped configs (the checkout's `configs/` when run from it)."""
    from hpa_jax import configs  # noqa: PLC0415

    return pathlib.Path(configs.__file__).resolve().parent


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
