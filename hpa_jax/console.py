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
