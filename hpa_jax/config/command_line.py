"""The `--config` flag's failures, and a `--workdir` that cannot be a folder, as one line each.

ml_collections' config flag fails inside absl's flag parsing with a traceback where the user
gave a `--config` file that is not there (an `OSError` met only when the config is first read)
or an override of a field the config does not have (`--config.train.bogus=1`: an
`AttributeError` or `KeyError` from ml_collections). `parse_flags` is absl's parser with those
turned into `hpa_jax: error: ...` lines, for `app.run(main, flags_parser=parse_flags)`.
"""

import pathlib
import re

from absl import app

from hpa_jax.config import shipped
from hpa_jax.errors import ConfigError, one_line_errors

_CONFIG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def parse_flags(argv: list[str], prog: str = "hpa_jax") -> list[str]:
    """`app.parse_flags_with_usage(argv)`, with a missing `--config` file and an override of an
    unknown config field each a one-line `prog: error: ...` (exit 1) instead of a traceback."""
    with one_line_errors(prog):
        check_config_file(argv)
        try:
            return app.parse_flags_with_usage(argv)
        except (AttributeError, KeyError) as e:
            field = unknown_override(argv, e)
            if field is None:
                raise
            hint = re.search(r'Did you mean "([^"]+)"', _message(e))
            raise ConfigError(f"--config.{field}: the config has no field {field}"
                              + (f" (did you mean {hint.group(1)}?)" if hint else "")) from None


def check_config_file(argv: list[str]) -> None:
    """The `--config` file (`PATH` or `PATH:ARGS`) is a file (after `shipped.resolve_argv`)."""
    for i, arg in enumerate(argv):
        if _CONFIG.match(arg):
            value = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            path = value.split(":", 1)[0]
            if path and not pathlib.Path(path).expanduser().is_file():
                raise ConfigError(f"--config={value}: {path} is not a config file (nor a config shipped with the "
                                  f"package: {', '.join(shipped.list_configs())})")


def unknown_override(argv: list[str], error: Exception) -> str | None:
    """The `--config.a.b` override (as "a.b") that ml_collections' `error` is about, or None."""
    text = _message(error)
    looked_up = re.search(r"Attempting to lookup: (\S+)", text)
    if looked_up:
        return looked_up.group(1)
    key = re.search(r"'([^'\"]+)'", text)
    if key is None:
        return None
    for arg in argv:
        override = _OVERRIDE.match(arg)
        if override and key.group(1) in override.group(1).split("."):
            return override.group(1)
    return None


def _message(error: BaseException) -> str:
    """The message ml_collections gave, inside the KeyError it raised (and the AttributeError
    wrapping that), not their quoted reprs."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    return str(error.args[0]) if error.args else str(error)


def check_workdir(workdir) -> None:
    """`--workdir` is a folder or can be made one: neither it nor a folder above it is a file."""
    path = pathlib.Path(workdir).expanduser().absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--workdir={workdir}: {folder} is a file, not a folder")
            return
