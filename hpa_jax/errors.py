"""Errors that are the user's to fix (bad files, bad config, nothing to restore).

The command line prints these as one line instead of a traceback; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Base of the errors `hpa_jax.main` reports as a one-line message."""


class DataError(UserError, ValueError):
    """A problem with the user's data files; the message names the file and the problem."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (unknown name, batch not divisible by the devices...)."""


class CheckpointError(UserError, FileNotFoundError):
    """No checkpoint to restore where one is needed."""


class TrainingDiverged(UserError, FloatingPointError):
    """A non-finite loss or gradient: the run stops and keeps its last good checkpoint."""
