"""One training run per output directory: OUTPUT_DIR/.lock.

Two runs on the same output_dir would write checkpoints and metrics.jsonl side by side (MindFormers
even renames the second run's files `..._rank_0_1-...`), and a resume would mix them. The lock is
a POSIX record lock (`fcntl.lockf`) on OUTPUT_DIR/.lock, held for the whole run; the kernel drops
it when the process dies, however it dies, so a lock left by a killed run is never an obstacle.
The file also records who holds it (pid, host, start time, command), which the refusal names, and
`state: running` until a clean exit writes `finished`; a run that finds `running` but gets the
lock knows the previous holder died and says it takes over. The file is never deleted (deleting
a lock file lets two processes lock two different files).

On file systems without POSIX locks (lockf fails with ENOLCK/EOPNOTSUPP) the recorded pid is
checked instead: a lock held by a dead pid on this host is taken over; one held on another host
is respected. Under msrun, rank 0 takes the lock for the job (the other ranks of the same job do
not, so they never refuse each other); a second job's rank 0 is refused and the launcher stops it.
"""
import errno
import fcntl
import json
import os
import socket
import sys
import time

from ..errors import ConfigError
from ..fileio import pid_alive

LOCK_FILE = ".lock"


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} (started {when})"


class RunLock:
    """`with RunLock(output_dir):` holds OUTPUT_DIR/.lock for the block; `enabled=False` is a no-op."""

    def __init__(self, output_dir: str, enabled: bool = True):
        self.path = os.path.join(os.path.abspath(output_dir), LOCK_FILE)
        self.enabled = enabled
        self.fd = None
        self.took_over = None          # the stale holder's record, when there was one

    @staticmethod
    def _read(fd: int) -> dict:
        """The holder record, read through `fd`: opening and closing another descriptor of the
        file would drop this process's POSIX lock on it."""
        try:
            data = b""
            while True:
                chunk = os.pread(fd, 65536, len(data))
                if not chunk:
                    break
                data += chunk
            info = json.loads(data.decode() or "{}")
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, info: dict) -> None:
        data = json.dumps(info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def acquire(self) -> "RunLock":
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = self._read(fd)
            if err.errno in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise ConfigError(f"output_dir {os.path.dirname(self.path)} is in use by another training run: "
                                  f"{_describe(holder)}; wait for it to finish, stop it, or choose another "
                                  "--output_dir") from None
            if not self._holder_gone(holder):       # no POSIX locks here: judge by the recorded pid
                os.close(fd)
                raise ConfigError(f"output_dir {os.path.dirname(self.path)} is in use by another training run: "
                                  f"{_describe(holder)} (this file system has no locks ({err.strerror}); "
                                  f"if that run is gone, delete {self.path})") from None
        self.fd = fd
        previous = self._read(fd)
        if previous.get("state") == "running":
            self.took_over = previous
            print(f"note: taking over {self.path}: the run that held it ({_describe(previous)}) "
                  "ended without releasing it (killed?)", file=sys.stderr, flush=True)
        self._write({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                     "state": "running", "command": " ".join(sys.argv)})
        return self

    @staticmethod
    def _holder_gone(holder: dict) -> bool:
        if holder.get("state") != "running":
            return True
        if holder.get("host") != socket.gethostname():
            return False
        try:
            return not pid_alive(int(holder.get("pid")))
        except (TypeError, ValueError):
            return True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            info = self._read(self.fd)
            info.update(state="finished", finished=time.time())
            self._write(info)
        except OSError:
            pass
        finally:
            os.close(self.fd)          # drops the lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
