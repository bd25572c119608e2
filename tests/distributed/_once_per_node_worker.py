"""msrun worker for test_once_per_node: the init checkpoint's verification under real collectives.

short: a 64 MiB file with a sidecar, verified with 0.05 s rounds (rank 0 hashes, rank 1 must not),
then the same file with a flipped byte (both ranks must get the same problem).
long: the leader works 40 s, ticking, with 5 s rounds: longer than one CPU collective waits (30 s).
"""
import os
import time

import mindspore as ms
from mindspore.communication import init

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
init()
from bitcpm_ms.fileio import atomic_json  # noqa: E402  (after init)
from bitcpm_ms.parallel import once_per_node  # noqa: E402
from bitcpm_ms.parallel.agreement import barrier, world  # noqa: E402
from bitcpm_ms.training import checkpoint_files  # noqa: E402
from bitcpm_ms.training.checkpoint_files import file_digest, verify_checkpoint  # noqa: E402

rank, _ = world()
root = os.environ["ONCE_DIR"]
mode = os.environ["ONCE_MODE"]

if mode == "short":
    path = os.path.join(root, "model.ckpt")
    if rank == 0:
        with open(path, "wb") as f:
            f.write(os.urandom(64 << 20))
        size, sha = file_digest(path)
        atomic_json({"bytes": size, "sha256": sha}, path + ".json")
    barrier()
    hashed = []
    real_digest = checkpoint_files.file_digest
    checkpoint_files.file_digest = lambda p, tick=None: (hashed.append(p), real_digest(p, tick))[1]
    verdict = once_per_node.verdict_once_per_node(lambda tick: verify_checkpoint(path, tick=tick), round_seconds=0.05)
    print(f"rank {rank} good: {verdict} hashed {len(hashed)}", flush=True)
    barrier()
    if rank == 0:
        with open(path, "r+b") as f:
            f.seek(12345)
            b = f.read(1)
            f.seek(12345)
            f.write(bytes([b[0] ^ 1]))
    barrier()
    verdict = once_per_node.verdict_once_per_node(lambda tick: verify_checkpoint(path, tick=tick), round_seconds=0.05)
    print(f"rank {rank} bad: {verdict}", flush=True)
else:
    def work(tick):
        end = time.monotonic() + 40
        while time.monotonic() < end:
            time.sleep(0.1)
            tick()
        return None

    print(f"rank {rank} long: {once_per_node.verdict_once_per_node(work, round_seconds=5)}", flush=True)
