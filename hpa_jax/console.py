"""Console scripts (`hpa-jax`, `hpa-jax-predict`, ...) next to `python -m`.

absl's `--help` lists the flags of the module that `sys.argv[0]` names: under `python -m` that is
the command's own file, but under a console script it is the wrapper pip wrote into `bin/`,
which defines none, so `--help` would list nothing. `run` registers the command's flags under
that name too, then runs the command as `python -m` does.
"""

import sys

from absl import app, flags


def run(main, module_name: str, **kwargs) -> None:
    """`app.run(main, **kwargs)` with the flags defined in `module_name` shown by `--help`."""
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main, **kwargs)


def spaced_lists(argv: list[str], names) -> list[str]:
    """`argv` with each list flag of `names` given argparse's way, its values spaced
    (`--inputs a.npz b.npz`, also `--inputs=a.npz b.npz`), as absl's `--inputs=a.npz,b.npz`, so
    both spellings work. A flag's values run to the next word that starts with `-` and is not a
    number (`--weights 1 -1` keeps its -1, for the check to refuse); nothing after `--` changes."""
    out, i = list(argv[:1]), 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            return out + ["--"] + list(argv[i:])
        name, has_value, value = arg.partition("=")
        if name.lstrip("-") not in names or not name.startswith("-"):
            out.append(arg)
            continue
        values = [value] if has_value else []
        while i < len(argv) and not _flag_like(argv[i]):
            values.append(argv[i])
            i += 1
        out.append(f"{name}={','.join(values)}")   # none: an empty list, for the command's check to refuse
    return out


def _flag_like(word: str) -> bool:
    if not word.startswith("-") or word == "-":
        return False
    try:
        float(word)
    except ValueError:
        return True
    return False

