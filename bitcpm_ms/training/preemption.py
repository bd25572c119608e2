"""Preemption: SIGTERM or SIGINT ends training after the current step, with a checkpoint.

Clusters preempt jobs with SIGTERM (and a grace period before SIGKILL); a user stops a run with
Ctrl-C (SIGINT). Python's defaults lose everything since the last periodic checkpoint. While
`BitCPMCheckpointMonitor` trains, `install()` replaces both handlers with one that only records the
signal; at the end of the step that is running, the monitor saves a checkpoint and asks the
trainer to stop; the command then exits with `PREEMPTED_EXIT_STATUS` (75, EX_TEMPFAIL: "try
again"), and `--resume_training true` continues exactly from that step. A second signal restores
the default handler and re-sends itself: Ctrl-C twice stops at once.

Under msrun the launcher forwards the signal to every worker, but they may receive it on either
side of a step boundary, and a signal sent to one worker reaches only that one. A rank therefore
never stops on its own flag: `stop_agreed()` exchanges the flags (`parallel.agreement.gather_ints`,
an AllGather and a host sync) and every rank stops after the same step, so no rank waits in a
collective that its peers have left and the checkpoints of all ranks are of one step. The
exchange is not done every step (it stalled the device pipeline once per step, issue 23):
`BitCPMCheckpointMonitor` calls `stop_agreed()` at steps every rank can compute alike, every
`preemption_check_steps` steps and at checkpoint steps. A check only when a signal has arrived
would not do: the ranks without a signal would not join the collective.
"""
import os
import signal
import sys
import threading
from typing import Optional

from ..parallel.agreement import gather_ints, world

PREEMPTED_EXIT_STATUS = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
    def __init__(self):
        self.signum: Optional[int] = None         # the first signal received
        self.stopped_at: Optional[int] = None     # the step after which training stopped
        self.checkpoint: Optional[str] = None     # the checkpoint saved then
        self.previous = {}                        # signum -> handler before install()


_state = _State()


def _handler(signum, frame):
    if _state.signum is not None:                 # second signal: stop now, the default way
        signal.signal(signum, _state.previous.get(signum, signal.SIG_DFL) or signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _state.signum = signum
    print(f"received {signal.Signals(signum).name}: finishing the current step, saving a checkpoint, "
          f"then stopping (send it again to stop at once)", file=sys.stderr, flush=True)


def install() -> bool:
    """Record SIGTERM / SIGINT instead of dying (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _state.signum = _state.stopped_at = _state.checkpoint = None
    for s in SIGNALS:
        _state.previous[s] = signal.signal(s, _handler)
    return True


def uninstall() -> None:
    """Restore the handlers that were there before `install()` (the recorded signal stays readable)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s, old in list(_state.previous.items()):
        signal.signal(s, old if old is not None else signal.SIG_DFL)
    _state.previous.clear()


def stop_agreed() -> bool:
    """True on every rank when any rank has received a signal (call it at the same step on all ranks)."""
    local = int(_state.signum is not None)
    if world()[1] == 1:
        return bool(local)
    return bool(gather_ints([local]).max())


def wait_for_peers() -> None:
    """Barrier before a preempted rank exits: msrun SIGKILLs the other workers as soon as one exits
    with a non-zero status, so no rank may leave before every rank is done."""
    if world()[1] > 1:
        gather_ints([0])


def mark_stopped(step: int, checkpoint: str) -> None:
    _state.stopped_at, _state.checkpoint = int(step), checkpoint


def preempted() -> Optional[dict]:
    """{"signal", "step", "checkpoint"} when training stopped because of a signal, else None."""
    if _state.stopped_at is None:
        return None
    name = signal.Signals(_state.signum).name if _state.signum is not None else "a peer rank's signal"
    return {"signal": name, "step": _state.stopped_at, "checkpoint": _state.checkpoint}
