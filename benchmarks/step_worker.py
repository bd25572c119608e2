"""The protocol between benchmarks.train_vs_torch and its worker processes (one framework each).

Why separate processes: PyTorch and MindSpore each keep thread pools (OpenMP, MKL, MindSpore's
actor and kernel pools, our kernels' pool); in one process they compete and spin against each
other, which slowed both sides in the earlier in-process comparison. Here each worker builds one
training step, runs its compile / warm-up steps, then blocks on stdin and runs only when asked, so
exactly one framework computes at a time and the idle one sleeps.

Commands, one per line on the worker's stdin: ``run N`` (time N steps), ``quit``. Replies are single
lines on stdout starting with ``@@`` + JSON (other output of the libraries is ignored by the parent).
No imports beyond the standard library: the PyTorch worker runs in another interpreter.
"""
import json
import os
import sys
import time

MARK = "@@"


def emit(obj, stream=None):
    stream = stream or sys.stdout
    stream.write(MARK + json.dumps(obj) + "\n")
    stream.flush()


def timed(step):
    """(wall seconds, loss, CPU seconds of the whole process): the CPU time shows how many cores a step
    really used, which the thread settings alone do not (framework-internal pools, spinning)."""
    c0, t0 = time.process_time(), time.perf_counter()
    loss = step()
    return time.perf_counter() - t0, loss, time.process_time() - c0


def serve(step, info, warmup):
    """Time the first step (compilation / allocation) and `warmup` more, announce readiness with
    `info` (versions, thread settings), then answer ``run N`` commands until ``quit`` or EOF."""
    first, loss, _ = timed(step)
    warm = [timed(step)[0] for _ in range(warmup)]
    emit(dict(info, ready=True, first_step_s=first, warmup_s=warm, first_loss=loss))
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "run":
            load = os.getloadavg()
            out = [timed(step) for _ in range(int(cmd[1]))]
            emit({"times": [t for t, _, _ in out], "cpu_s": [c for _, _, c in out], "last_loss": out[-1][1],
                  "load_before": load})


def read_reply(proc):
    """The next ``@@`` JSON line of a worker (a subprocess.Popen with text pipes); raises if it exits."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {proc.args!r} exited (code {proc.poll()}) without a reply")
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
