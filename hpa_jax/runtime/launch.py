"""N processes of `hpa_jax.main` on this machine, joined by JAX's distributed runtime, as N hosts
would be: what `python -m hpa_jax.launch --num_processes=N -- <hpa_jax.main's flags>` runs (its
flags are in `hpa_jax/launch.py`).

For trying a multi-host run (and testing it) on one machine: it picks a free port for the
coordinator, gives each process its `--process_id`, forwards each one's output line by line with
a `[pK]` prefix, and stops them all when one fails. On a cluster use the cluster's launcher
(`srun`, `mpirun`) with `--distributed=auto` instead (WORKSPACE.md).

Signals: SIGTERM or a first Ctrl-C is passed on to every process as SIGTERM, which JAX's
preemption notifier turns into a checkpoint at one step all processes agree on; a second
Ctrl-C kills them.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S+")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_env(devices_per_process: int | None) -> dict:
    """The environment of each process; `devices_per_process` simulated CPU devices replace any
    device count the XLA flags set (as the tests' 8)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if devices_per_process:
        env["XLA_FLAGS"] = DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).strip()
        env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
    return env


def forward(stream, prefix: str, out, lock: threading.Lock) -> None:
    """Copies `stream` to `out` a whole line at a time, `prefix` before each, so the processes'
    lines never mix; a progress bar's carriage return ends a line too, so the bar keeps
    redrawing in place under its prefix."""
    pending = b""
    while chunk := stream.read1(65536):
        pending += chunk
        *lines, pending = re.split(rb"(?<=[\r\n])", pending)
        if lines:
            with lock:
                out.write("".join(prefix + line.decode(errors="replace") for line in lines if line))
                out.flush()
    if pending:
        with lock:
            out.write(prefix + pending.decode(errors="replace") + "\n")
            out.flush()


def launch(num_processes: int, main_args: list[str], devices_per_process: int | None = None, port: int = 0,
           grace: float = 20.0) -> int:
    """Runs `num_processes` processes of `python -m hpa_jax.main MAIN_ARGS` to the end, the
    coordinator on localhost:`port` (0: a free one), each with `devices_per_process` simulated CPU
    devices (None: as the environment says); once one fails, the others get `grace` seconds to stop
    by themselves before they are killed. Returns the exit code (the first failure's, else 0)."""
    port = port or free_port()
    env = child_env(devices_per_process)
    procs = []
    for i in range(num_processes):
        command = [sys.executable, "-m", "hpa_jax.main", *main_args, f"--coordinator_address=localhost:{port}",
                   f"--num_processes={num_processes}", f"--process_id={i}"]
        # Each in its own process group: a Ctrl-C in the terminal reaches the launcher only,
        # which passes it on as SIGTERM (JAX's preemption notifier listens for that).
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      start_new_session=True))
    lock = threading.Lock()
    threads = [threading.Thread(target=forward, args=(stream, f"[p{i}] ", out, lock), daemon=True)
               for i, p in enumerate(procs) for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))]
    for t in threads:
        t.start()

    interrupts = []

    def on_signal(signum, frame):
        del frame
        interrupts.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL if len(interrupts) > 1 and signum == signal.SIGINT else signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    failed_at, code = None, 0
    try:
        while any(p.poll() is None for p in procs):
            for i, p in enumerate(procs):
                if p.poll() not in (None, 0) and failed_at is None:
                    failed_at, code = time.monotonic(), p.returncode
                    print(f"hpa_jax.launch: process {i} exited with {describe(p.returncode)}; stopping the others "
                          f"(killed after {grace:g} s)", file=sys.stderr, flush=True)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t in threads:
            t.join(timeout=5)
    if code == 0:
        code = next((p.returncode for p in procs if p.returncode != 0), 0)
    return code if code >= 0 else 128 - code


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"

