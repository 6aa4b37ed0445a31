"""Several hosts as one program: JAX's own multi-process runtime (`jax.distributed`).

Every process runs the same command; `initialize` joins them into one runtime, after which
`jax.devices()` lists the devices of all of them and the train step's mesh spans them all.
Process 0 is the primary: it writes the run's files and prints; every process reads its share of
each batch (`pipeline.train_batches`) and reports its own errors.
"""

import contextlib
import faulthandler
import itertools
import os
import socket
import sys
import time

import jax

from hpa_jax.errors import UserError, first_line

MODES = ("", "off", "auto")


class DistributedError(UserError, RuntimeError):
    """The processes could not form (or lost) one runtime: a coordinator out of reach, a peer gone."""


def settings_from_env(coordinator_address: str | None, num_processes: int | None, process_id: int | None):
    """The flags, else the environment variables JAX's launchers and ours use."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    return coordinator_address, num_processes, process_id


def initialize(mode: str = "", *, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, initialization_timeout: int = 300,
               heartbeat_timeout: int = 60) -> bool:
    """Joins the multi-process runtime; returns whether it did.

    `mode` "" starts it when a coordinator address is given (flag or `JAX_COORDINATOR_ADDRESS`)
    with the number of processes and this process's id; "auto" lets JAX read them from the
    cluster (Slurm, Open MPI, Kubernetes...); "off" never starts it. A process that cannot reach
    the coordinator within `initialization_timeout` seconds stops with one line; once running, a
    peer that stops answering for `heartbeat_timeout` seconds ends the others with an error
    rather than a hang.
    """
    if mode not in MODES:
        raise DistributedError(f"--distributed={mode!r}: expected 'auto', 'off' or nothing (start when "
                               f"--coordinator_address is given)")
    coordinator_address, num_processes, process_id = settings_from_env(coordinator_address, num_processes,
                                                                       process_id)
    if mode == "off" or (mode == "" and coordinator_address is None):
        return False
    if mode == "" and (num_processes is None or process_id is None):
        raise DistributedError(f"--coordinator_address={coordinator_address} needs --num_processes and --process_id "
                               f"(or JAX_NUM_PROCESSES and JAX_PROCESS_ID), or --distributed=auto on a cluster")
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
                  initialization_timeout=int(initialization_timeout), heartbeat_timeout_seconds=int(heartbeat_timeout))
    if mode == "":
        kwargs["cluster_detection_method"] = "deactivate"   # what was given, not a guess from the environment
    where = coordinator_address or "the coordinator JAX detects"
    if coordinator_address and process_id not in (None, 0):
        # JAX's client aborts the process (no Python exception) when it cannot register in time.
        wait_for_coordinator(coordinator_address, initialization_timeout, f"process {process_id} of {num_processes}")
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # noqa: BLE001 - jax raises RuntimeError, ValueError or its own XlaRuntimeError
        who = f"process {process_id} of {num_processes}" if process_id is not None else "this process"
        raise DistributedError(f"{who} could not join the distributed runtime at {where} within "
                               f"{initialization_timeout} s: {first_line(e)}") from None
    # A peer that dies while this process waits outside a collective (at a barrier, in Python) is
    # reported by the coordination service, and JAX's client then ends this process itself: one
    # fatal log line ("...another task died; see the other task logs"), then abort. Its Python hook
    # for that (`missed_heartbeat_callback`) cannot be used: jaxlib 0.10 throws std::bad_cast calling
    # it. Python's fault handler, which absl turns on, would print every thread's stack and the
    # module list after that line: a traceback for a peer's failure, so it is off here.
    faulthandler.disable()
    return True


def wait_for_coordinator(address: str, timeout: float, who: str) -> None:
    """Returns once the coordinator's port at `address` (host:port) accepts connections; a
    `DistributedError` if it does not within `timeout` seconds."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "localhost"
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except ValueError:
            raise DistributedError(f"--coordinator_address={address}: expected host:port") from None
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"{who} could not reach the coordinator at {address} within {timeout:g} s "
                                       f"({e.strerror or e}): is process 0 running, and is the address one this "
                                       f"host can reach?") from None
            time.sleep(0.5)


def is_primary() -> bool:
    """Process 0: the one that writes the run's files and prints its progress."""
    return jax.process_index() == 0


def label() -> str:
    """'' on one process, else ' (process i of n)', for messages each process prints itself."""
    return f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""


_BARRIER_TIMEOUT_S = 3600   # a peer may be compiling a big model or generating the synthetic dataset
_barriers = itertools.count()


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (nothing on one process).

    This is the coordination service's barrier, not a collective: gloo (JAX's CPU collectives)
    gives a process 30 s to join a device group's first collective, so processes must arrive
    there together, which these barriers see to; a peer that dies meanwhile ends the wait
    through the heartbeat."""
    if jax.process_count() > 1:
        from jax._src import distributed as jax_distributed  # noqa: PLC0415 - JAX exposes no barrier of its own

        jax_distributed.global_state.client.wait_at_barrier(f"hpa_jax:{next(_barriers)}:{name}",
                                                            _BARRIER_TIMEOUT_S * 1000)


class Together:
    """A jitted function whose first call, with several processes, compiles ahead of time and
    waits for every process to have compiled too before it runs: compiling takes each host its
    own time, and the program's first collective must not wait for a late one (see `barrier`)."""

    def __init__(self, jitted, name: str):
        self.jitted, self.name, self.compiled = jitted, name, None

    def __call__(self, *args):
        if jax.process_count() == 1:
            return self.jitted(*args)
        if self.compiled is None:
            self.compiled = self.jitted.lower(*args).compile()
            barrier(f"compiled {self.name}")
        return self.compiled(*args)


def primary_first(fn, *args, **kwargs):
    """`fn` on the primary, then on the others: work that fills a shared cache (the synthetic
    dataset, duplicate hashes) is done once and then reused, instead of by every process at once."""
    if jax.process_count() == 1:
        return fn(*args, **kwargs)
    result = fn(*args, **kwargs) if is_primary() else None
    barrier(f"primary_first:{getattr(fn, '__name__', 'fn')}")
    return result if is_primary() else fn(*args, **kwargs)


@contextlib.contextmanager
def quiet_unless_primary():
    """The other processes' standard output goes nowhere: one copy of every report and summary.
    Their standard error (warnings, errors) stays, each line theirs."""
    if is_primary():
        yield
        return
    saved = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull
        try:
            yield
        finally:
            sys.stdout = saved


# What a collective or the coordination service says when another process is gone.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "unhealthy", "stopped sending heartbeats",
              "heartbeat timeout", "Barrier failed", "Gloo", "NCCL", "coordination service")


@contextlib.contextmanager
def lost_peers():
    """A collective that failed because another process died becomes one `DistributedError` line
    (the dead process's own log says why it died)."""
    try:
        yield
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1 or not any(marker in str(e) for marker in _LOST_PEER):
            raise
        raise DistributedError(f"another process of the run stopped ({first_line(e, 160)}); see its log for why; "
                               f"restart the run on every host to resume from the last checkpoint") from None


@contextlib.contextmanager
def exit_promptly():
    """Around a multi-process command: on failure, leave at once (`os._exit`, after the message)
    instead of through Python's exit, where JAX waits at a shutdown barrier for peers that may be
    stuck in a collective with this process, or dead: the peers' collectives then fail within
    seconds, not after the runtime's timeouts."""
    try:
        yield
    except SystemExit as e:
        if jax.process_count() == 1 or e.code in (0, None):
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        _leave(e.code if isinstance(e.code, int) else 1)
    except BaseException:
        if jax.process_count() == 1:
            raise
        import traceback  # noqa: PLC0415

        traceback.print_exc()
        _leave(1)


def _leave(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
