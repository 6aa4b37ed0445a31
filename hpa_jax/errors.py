"""Errors that are the user's to fix (bad files, bad config, nothing to restore), and the one
place the command lines turn them into one line.

The command line prints these as one line instead of a traceback; anything else is a bug
and keeps its traceback.
"""

import contextlib
import sys


class UserError(Exception):
    """Base of the errors `hpa_jax.main` reports as a one-line message."""


class DataError(UserError, ValueError):
    """A problem with the user's data files; the message names the file and the problem."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (unknown name, batch not divisible by the devices...)."""


class CheckpointError(UserError, FileNotFoundError):
    """No readable checkpoint where one is needed, or one that could not be written."""


class TrainingDiverged(UserError, FloatingPointError):
    """A non-finite loss or gradient: the run stops and keeps its last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGTERM or a first Ctrl-C: training stopped after saving a checkpoint to resume from. Not the
    user's mistake, but the run did not finish, so the command exits with 128 + the signal number,
    as a shell reports a process the signal ended."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def first_line(error: BaseException, limit: int = 240) -> str:
    """The first line of a library exception's root cause, shortened: orbax wraps tensorstore's
    errors (which name the file) in messages holding whole specs, which would bury what the user
    needs to see."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def warn(message: str) -> None:
    """A problem the run goes on past (an unreadable checkpoint set aside, a plan that will not
    fit), as one `hpa_jax: warning:` line on standard error."""
    print(f"hpa_jax: warning: {message}", file=sys.stderr, flush=True)


def is_bug(error: BaseException) -> bool:
    """Errors no file can cause: they keep their traceback wherever files' errors are reported."""
    return isinstance(error, (TypeError, AttributeError, NameError, AssertionError, ImportError, NotImplementedError,
                              RecursionError))


@contextlib.contextmanager
def file_errors(path, doing: str = "reading", error: type = DataError, kinds: tuple = (Exception,)):
    """Around a library call that reads or writes `path` (orbax, tensorstore, grain, PIL, pandas,
    numpy): what the file can cause (`kinds` of exceptions) becomes a one-line `error` naming it;
    bugs keep their type and traceback."""
    try:
        yield
    except UserError:
        raise
    except kinds as e:
        if is_bug(e):
            raise
        raise error(f"{path}: {doing} failed: {first_line(e)}") from e


@contextlib.contextmanager
def one_line_errors(prog: str):
    """Every command line's boundary: a `UserError` leaves as `prog: error: <message>` (exit 1), a
    `TrainingInterrupted` as `prog: <message>` (exit 128 + signal), a Ctrl-C that aborts as one
    line (exit 130); anything else keeps its traceback."""
    try:
        yield
    except UserError as e:
        sys.exit(f"{prog}: error: {e}")
    except TrainingInterrupted as e:
        print(f"{prog}: {e}", file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print(f"{prog}: aborted (Ctrl-C)", file=sys.stderr, flush=True)
        sys.exit(130)
