"""Two processes x 4 simulated CPU devices, joined by `jax.distributed` on this machine, against one
process x 8 devices: the same training, evaluation and submission, through a preemption on one
host, a killed host and a restart.

Numbers are compared to float rounding, not bit for bit: with the ordered reductions
(`collectives.ordered_sum`) every collective gives the same bits on 1 or 2 processes (here the final
parameters came out identical), but XLA:CPU sizes a process's thread pool by its device count and
sums a convolution's kernel gradient in another order with 4 devices in a process than with 8
(measured on one device alone); the test probabilities differed by 6e-8.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from test_cli import REPO, TINY

RUN = [*TINY, "--config.train.num_epochs=2", "--config.train.accumulation_steps=2", "--config.checkpoint.every_steps=2"]
MODES = "--mode=train,evaluate,predict"
HEARTBEAT_S = 15
# A killed process's peers exit within this: at once when their next collective finds its
# connection closed (measured: under 1 s), after the heartbeat timeout when they are waiting at a
# barrier of the coordination service.
DEAD_PEER_BOUND_S = HEARTBEAT_S + 20


def cpu_env(devices: int) -> dict:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(args, logs):
    """Two `hpa_jax.main` processes of one run, as two hosts would start them."""
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "hpa_jax.main", *args, f"--coordinator_address=localhost:{port}",
                              "--num_processes=2", f"--process_id={i}", f"--heartbeat_timeout={HEARTBEAT_S}"],
                             cwd=REPO, env=cpu_env(4),
                             stdout=open(logs[i], "w"), stderr=subprocess.STDOUT) for i in range(2)]


def wait_for_checkpoint_after(workdir, step: int, procs, timeout=400) -> int:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        folder = workdir / "checkpoints"
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        if any(s > step for s in steps):
            return max(steps)
        assert all(p.poll() is None for p in procs), "a process ended before the checkpoint was written"
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after step {step} within {timeout} s")


def records(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in rows]


def assert_close_records(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def final_params(workdir):
    """(step, the newest checkpoint's train state as numpy arrays)."""
    import jax
    import orbax.checkpoint as ocp

    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(steps[-1]) / "default"
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return steps[-1], checkpointer.restore(path, restore_args=as_numpy)


def test_two_processes_train_evaluate_predict_as_one_through_preemption_and_a_dead_peer(tmp_path):
    cache = f"--config.data.synthetic.cache_dir={tmp_path / 'cache'}"
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "hpa_jax.main", *RUN, cache, f"--workdir={one}", MODES], cwd=REPO,
                            env=cpu_env(8), capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]

    # SIGTERM on one host only: both stop at one step, with one checkpoint to resume from.
    logs = [tmp_path / f"term{i}.log" for i in range(2)]
    procs = start_processes([*RUN, cache, f"--workdir={two}"], logs)
    wait_for_checkpoint_after(two, 1, procs)
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=300) for p in procs]
    texts = [log.read_text() for log in logs]
    stops = [re.findall(r"stopped by SIGTERM at (?:step|the end of epoch \d+ \(step) (\d+)", t) for t in texts]
    assert codes == [128 + signal.SIGTERM] * 2, texts[0][-2000:] + texts[1][-2000:]
    assert stops[0] == stops[1] and len(stops[0]) == 1, stops
    stopped_at = int(stops[0][0])
    assert (two / "checkpoints" / str(stopped_at)).is_dir() and stopped_at < 6

    # One process killed: the other stops with one line within the bound.
    logs = [tmp_path / f"kill{i}.log" for i in range(2)]
    procs = start_processes([*RUN, cache, f"--workdir={two}"], logs)
    wait_for_checkpoint_after(two, stopped_at, procs)
    procs[1].kill()
    killed = time.monotonic()
    code = procs[0].wait(timeout=DEAD_PEER_BOUND_S + 60)
    waited = time.monotonic() - killed
    assert code != 0 and waited < DEAD_PEER_BOUND_S, (code, waited)
    assert_stopped_for_a_dead_peer(logs[0].read_text())

    # The launcher restarts the pair, which resumes and ends as the single process did.
    relaunch = subprocess.run([sys.executable, "-m", "hpa_jax.launch", "--num_processes=2", "--devices_per_process=4",
                               "--", *RUN, cache, f"--workdir={two}", MODES], cwd=REPO, env=os.environ.copy(),
                              capture_output=True, text=True, timeout=900)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert "[p0] resumed from" in relaunch.stdout, relaunch.stdout[-3000:]

    assert_close_records(records(two), records(one))
    step, expected = final_params(one)
    assert final_params(two)[0] == step == 6
    got = final_params(two)[1]
    for a, b in zip(jax_leaves(got), jax_leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    evaluation = [json.loads((w / "eval_metrics.json").read_text()) for w in (one, two)]
    assert evaluation[0]["val_macro_f1"] == evaluation[1]["val_macro_f1"]
    assert evaluation[0]["val_loss"] == pytest.approx(evaluation[1]["val_loss"], rel=1e-6)
    assert evaluation[0]["num_images"] == evaluation[1]["num_images"]
    submissions = [pd.read_csv(w / "submission.csv", dtype=str, keep_default_na=False) for w in (one, two)]
    assert submissions[0].equals(submissions[1])
    probs = [np.load(w / "test_probs.npz") for w in (one, two)]
    assert (probs[0]["ids"] == probs[1]["ids"]).all()
    np.testing.assert_allclose(probs[1]["probs"], probs[0]["probs"], atol=1e-6)


JAX_ENDS_IT = "Terminating process because the JAX distributed service detected fatal errors"


def assert_stopped_for_a_dead_peer(log: str):
    """A process whose peer died says so in one line and shows no Python stack: ours when the loss
    reached Python first (a collective or barrier failed), else JAX's own (its client ends the
    process when the coordination service reports the dead peer; both can come at one instant)."""
    ours = [line for line in log.splitlines() if line.startswith("hpa_jax (process 0 of 2): error:")]
    jaxs = [line for line in log.splitlines() if JAX_ENDS_IT in line]
    assert (len(ours) == 1 and "another process of the run stopped" in ours[0]) or (not ours and len(jaxs) == 1), \
        log[-3000:]
    assert "Traceback" not in log and "Fatal Python error" not in log and "Extension modules" not in log, log[-3000:]


PEER = """
import os, signal, sys, time
from absl import app
from hpa_jax.runtime import distributed
def main(_):
    distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
                           heartbeat_timeout=5)
    distributed.barrier("joined")
    if distributed.is_primary():
        time.sleep(120)             # in Python, outside any collective or barrier
    else:
        os.kill(os.getpid(), signal.SIGKILL)
app.run(main, argv=sys.argv[:1])
"""


def test_a_peer_dead_while_this_process_is_outside_a_collective_ends_it_in_one_line(tmp_path):
    """The path CI met: JAX's client, not a Python exception, ends the survivor; absl's fault
    handler must not add a stack dump to its line."""
    address = f"localhost:{free_port()}"
    logs = [tmp_path / f"peer{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", PEER, address, str(i)], cwd=REPO, env=cpu_env(1),
                              stdout=open(logs[i], "w"), stderr=subprocess.STDOUT) for i in range(2)]
    assert procs[1].wait(timeout=120) == -signal.SIGKILL, logs[1].read_text()[-3000:]
    start = time.monotonic()
    code = procs[0].wait(timeout=60)
    assert code != 0 and time.monotonic() - start < 30, code
    assert_stopped_for_a_dead_peer(logs[0].read_text())


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_an_unreachable_coordinator_is_one_line_within_the_timeout():
    from hpa_jax.runtime import distributed

    start = time.monotonic()
    with pytest.raises(distributed.DistributedError, match=r"process 1 of 2 could not reach the coordinator at "
                                                           r"localhost:\d+ within 1 s \(Connection refused\)"):
        distributed.initialize(coordinator_address=f"localhost:{free_port()}", num_processes=2, process_id=1,
                               initialization_timeout=1)
    assert time.monotonic() - start < 5


def test_the_launcher_prefixes_whole_lines_and_keeps_progress_bars_in_place():
    import io
    import threading

    from hpa_jax.runtime.launch import forward

    class Chunks(io.RawIOBase):   # a pipe delivering the text in the pieces a process wrote it in
        def __init__(self, chunks):
            self.chunks = list(chunks)

        def read1(self, n=-1):
            return self.chunks.pop(0) if self.chunks else b""

    out = io.StringIO()
    forward(Chunks([b"epoch 1/2:  50%", b"|#  | 1/2\repoch 1/2: 100%|## | 2/2\n", b"done\nno newline"]), "[p1] ", out,
            threading.Lock())
    assert out.getvalue() == ("[p1] epoch 1/2:  50%|#  | 1/2\r[p1] epoch 1/2: 100%|## | 2/2\n[p1] done\n"
                              "[p1] no newline\n")
