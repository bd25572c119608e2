"""A check that one rank per node does for every rank: hashing the init checkpoint or the dataset.

Before, every rank of a job hashed the 32.7 GB fp32 init checkpoint of the 8B model and every
dataset shard itself: 16 ranks, 16 full reads of the same files. Now the lowest rank of each node
(ranks on the same host and kernel) runs the check; the others wait, and every rank gets the same
verdict: the node leader's problem, or, when its own node found none, the first problem another
node found, so that no rank starts training while another stops (a collective would then wait
forever). One leader per node rather than per job because a node may hold its own copy of the
data, and because the leader's read leaves the file in that node's page cache for its ranks.

The waiting ranks cannot simply block in one collective until the leader is done: MindSpore's CPU
collectives give up after 30 s (measured: an AllGather whose peer arrived 60 s late failed after
30.0 s, "CollectiveWait ... failed"), and HCCL has its own execution timeout. So the exchange is
in rounds: the leader calls `tick()` while it works (the hashing loops do, once per block) and
every `ROUND_SECONDS` that costs one small AllGather, which the other ranks answer from their wait
loop; the loop ends in the first round in which no leader is still working. Every rank therefore
makes the same number of collective calls. One process (no communication group) runs the check
itself and exchanges nothing.
"""
import hashlib
import socket
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import BitCPMError
from .agreement import gather_ints, world

ROUND_SECONDS = 10.0
MAX_MESSAGE_BYTES = 2000
WORKING, OK, FAILED = 0, 1, 2


def node_key() -> Tuple[int, int]:
    """Two int32 that are equal for processes on the same node: hash of host name and kernel boot id
    (containers on one machine share the boot id, two machines that share a host name do not)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    digest = hashlib.sha256(f"{socket.gethostname()}\0{boot}".encode()).digest()
    return (int.from_bytes(digest[:4], "little", signed=True), int.from_bytes(digest[4:8], "little", signed=True))


def node_leaders(keys: np.ndarray) -> List[int]:
    """For each rank (row of `keys`), the lowest rank with the same node key."""
    first = {}
    for rank, row in enumerate(map(tuple, keys.tolist())):
        first.setdefault(row, rank)
    return [first[tuple(row)] for row in keys.tolist()]


def _encode(text: str) -> List[int]:
    data = text.encode("utf-8")[:MAX_MESSAGE_BYTES]
    return [len(data)] + list(data) + [0] * (MAX_MESSAGE_BYTES - len(data))


def _decode(row: Sequence[int]) -> str:
    n = int(row[0])
    return bytes(int(b) for b in row[1:1 + n]).decode("utf-8", "ignore")


class _Rounds:
    """The leader's side of the exchange: one AllGather of WORKING every ROUND_SECONDS of work."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()
        self.rounds = 0

    def tick(self) -> None:
        if time.monotonic() - self.last >= self.seconds:
            gather_ints([WORKING])
            self.rounds += 1
            self.last = time.monotonic()


def _run(check: Callable, tick: Callable[[], None]) -> Tuple[Optional[str], Optional[BaseException]]:
    """(problem, exception): an exception becomes the problem text, kept to be re-raised by its rank."""
    try:
        return check(tick), None
    except Exception as err:            # noqa: BLE001  (the peers must hear of any failure, or they wait)
        return f"{err}" if str(err) else type(err).__name__, err


def verdict_once_per_node(check: Callable[[Callable[[], None]], Optional[str]],
                          round_seconds: float = ROUND_SECONDS) -> Optional[str]:
    """Run `check(tick)` on one rank per node and return the same verdict on every rank: None when
    every node's check passed, else a problem (a phrase, as `verify_checkpoint` returns it).

    `check` returns None or a problem and should call `tick()` often (at least every few seconds
    of work). An exception in `check` is re-raised on the rank where it happened after the others
    have been told (they get its message as the problem); a `BitCPMError` (e.g. the DataError of
    a bad shard) is returned as the problem on every rank instead. Call it on every rank of the job, at
    the same point: it is a collective."""
    rank, size = world()
    if size == 1:
        return check(lambda: None)
    leaders = node_leaders(gather_ints(node_key()))
    problem, err = None, None
    if leaders[rank] == rank:
        problem, err = _run(check, _Rounds(round_seconds).tick)
    state = FAILED if problem is not None else OK
    while True:
        states = gather_ints([state])[:, 0]
        if not (states == WORKING).any():
            break
    failed = [r for r in sorted(set(leaders)) if states[r] == FAILED]
    if not failed:
        return None
    rows = gather_ints(_encode(problem) if problem is not None else _encode(""))
    if err is not None and not isinstance(err, BitCPMError):
        raise err                       # a bug or an OS error on this rank: its own traceback
    mine = leaders[rank]
    if mine in failed:
        return _decode(rows[mine])
    return f"{_decode(rows[failed[0]])} (found by rank {failed[0]} on another node)"
