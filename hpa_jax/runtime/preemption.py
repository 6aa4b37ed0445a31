"""Stopping training cleanly: SIGTERM (a preempted node) or a first Ctrl-C asks the loop to stop
after the current step, save a mid-epoch checkpoint with the data iterator's position and exit;
a second Ctrl-C aborts at once.

`should_stop(step)` is the one question the loop asks after every step. On one process it is a
flag the signal handler sets. With several processes (`jax.distributed`) every host must stop at
the same step, so it is orbax's `reached_preemption(step)` (JAX's preemption sync point, which the
hosts agree on); JAX's own notifier then watches SIGTERM and no handler is installed here, as a
flag set on one host only would stop that host alone.
"""

import os
import signal

import jax


class StopRequested(Exception):
    """Raised by the training loop at the step where it stopped: the state after that step, its
    global step and the losses of the epoch so far (what a mid-epoch checkpoint holds)."""

    def __init__(self, state, step: int, losses: list[float]):
        super().__init__(f"stop requested at step {step}")
        self.state, self.step, self.losses = state, step, losses


class StopOnSignal:
    """Context manager: while active, SIGTERM and a first SIGINT set `signum` instead of killing
    the process; a second SIGINT raises KeyboardInterrupt. The previous handlers come back on exit.
    `reached_preemption` is orbax's `CheckpointManager.reached_preemption`, asked when distributed."""

    def __init__(self, reached_preemption=None):
        self.signum = None
        self._reached_preemption = reached_preemption
        self._previous = {}
        self._distributed = jax.process_count() > 1

    def __enter__(self):
        try:
            for signum in () if self._distributed else (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:   # not the main thread: signals go to the default handlers
            pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            # os.write, not print: the handler may interrupt a print (tqdm's) to the same stream.
            os.write(2, f"\nhpa_jax: {signal.Signals(signum).name} received: stopping after the current step and "
                        f"saving a checkpoint (Ctrl-C again to abort at once)\n".encode())

    def should_stop(self, step: int) -> bool:
        """Called after every step, on every host, with the global step just finished."""
        if self._distributed and self.signum is None and self._reached_preemption(step):
            self.signum = signal.SIGTERM
        return self.signum is not None
