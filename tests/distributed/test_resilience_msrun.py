"""2 msrun workers: one rank kill -9'd in the middle of a checkpoint write, and SIGTERM to the
launcher (flags exchanged every step, and every 4 steps); each resumed run ends with the weights
and Adam moments of an uninterrupted 2-worker run."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml

from ._util import (LAUNCHER, REPO, RUNNER, SMALL_MODEL, _env, free_port, load_arrays, make_mindrecord,
                    model_and_optimizer, run_msrun, tail, write_config)

STEPS = 10


def _popen(cfg, log_dir, *args):
    order = " ".join([RUNNER, "--config", cfg, *map(str, args)])
    return subprocess.Popen(["bash", LAUNCHER, order, "2", "2", "127.0.0.1", str(free_port()), "0", log_dir,
                             "True", "300"], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _max_step(out):
    try:
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return max([json.loads(line)["step"] for line in f if '"loss"' in line] or [0])
    except (OSError, ValueError):
        return 0


def _final(out, rank):
    return model_and_optimizer(load_arrays(os.path.join(out, "checkpoint", f"rank_{rank}",
                                                        f"dp_rank_{rank}-1_{STEPS}.ckpt")))


def _assert_same(out, ref):
    for rank in (0, 1):
        a, b = _final(out, rank), _final(ref, rank)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"rank {rank} {k}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrun_res")
    data = make_mindrecord(str(root / "data" / "train.mindrecord"), 4 * STEPS + 16, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    cfg = write_config(str(root / "dp.yaml"), data, str(root / "unused"), 2, data_parallel=2, total_steps=STEPS)
    ref = str(root / "ref")
    proc = run_msrun(cfg, 2, str(root / "log_ref"), "--output_dir", ref, "--max_steps", STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    return {"root": root, "cfg": cfg, "ref": ref}


@pytest.mark.slow          # 3 msrun launches
def test_one_rank_killed_during_a_save_then_resumed(setup):
    root, cfg = setup["root"], setup["cfg"]
    out = str(root / "killed")
    proc = _popen(cfg, str(root / "log_k"), "--output_dir", out, "--max_steps", STEPS)
    rank1 = os.path.join(out, "checkpoint", "rank_1")
    victim, reached, deadline = None, False, time.time() + 400
    while victim is None and time.time() < deadline and proc.poll() is None:
        if not reached:                                    # wait for step 3, then watch rank 1's saves
            reached = _max_step(out) >= 3
            time.sleep(0.02)
            continue
        tmp = [n for n in os.listdir(rank1) if n.startswith(".tmp-")] if os.path.isdir(rank1) else []
        if tmp:
            victim = int(tmp[0][len(".tmp-"):])
            os.kill(victim, signal.SIGKILL)                # rank 1, in the middle of writing its checkpoint
        time.sleep(0.0005)
    stdout, stderr = proc.communicate(timeout=300)
    assert victim is not None, tail(stdout + stderr)
    assert proc.returncode == 1 and "worker rank 1 " in stderr, tail(stdout + stderr)
    newest = [_newest_good(os.path.join(out, "checkpoint", f"rank_{r}")) for r in (0, 1)]
    resumed = run_msrun(cfg, 2, str(root / "log_k2"), "--output_dir", out, "--max_steps", STEPS,
                        "--resume_training", "true")
    assert resumed.returncode == 0, tail(resumed.stdout + resumed.stderr)
    events = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"resume"' in line]
    assert events[-1]["from_step"] == min(newest), (newest, events[-1])   # the newest step good on both ranks
    _assert_same(out, setup["ref"])


def _newest_good(rank_dir):
    from bitcpm_ms.training.checkpoint_files import list_checkpoints, verify_checkpoint
    good = [e.step for e in list_checkpoints(rank_dir) if e.sidecar and verify_checkpoint(e.path, e.sidecar) is None]
    return max(good)


def _sigterm_after_first_step(proc, out):
    """SIGTERM to the launcher once the run logged step 1; (stdout, stderr) after it exits."""
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and _max_step(out) < 1:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=300)


@pytest.mark.slow          # 2 msrun launches
def test_sigterm_to_the_launcher_saves_on_every_rank_then_resumes(setup):
    root, cfg = setup["root"], setup["cfg"]
    out = str(root / "term")
    proc = _popen(cfg, str(root / "log_t"), "--output_dir", out, "--max_steps", STEPS)
    stdout, stderr = _sigterm_after_first_step(proc, out)
    assert proc.returncode == 75, tail(stdout + stderr)
    assert "all 2 ranks saved a checkpoint" in stderr
    stopped = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"preempted"' in line]
    k = stopped[0]["after_step"]
    assert k < STEPS
    for rank in (0, 1):
        assert os.path.exists(os.path.join(out, "checkpoint", f"rank_{rank}", f"dp_rank_{rank}-1_{k}.ckpt"))
    resumed = run_msrun(cfg, 2, str(root / "log_t2"), "--output_dir", out, "--max_steps", STEPS,
                        "--resume_training", "true")
    assert resumed.returncode == 0, tail(resumed.stdout + resumed.stderr)
    _assert_same(out, setup["ref"])



@pytest.mark.slow          # 3 msrun launches
def test_sigterm_stops_every_rank_at_the_next_agreement_step(tmp_path):
    """preemption_check_steps 4 and a checkpoint only at the end: the ranks exchange their flags
    after steps 4, 8, 12, ... only. A SIGTERM after step 1 stops both at the same multiple of 4,
    each with one checkpoint of that step, and the resumed run ends bit-identical to an
    uninterrupted one (32 steps: ~50 ms each here, so the signal lands well before the end)."""
    steps = 32
    data = make_mindrecord(str(tmp_path / "data" / "train.mindrecord"), 4 * steps + 16, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    cfg_path = write_config(str(tmp_path / "dp.yaml"), data, str(tmp_path / "unused"), 2, data_parallel=2,
                            total_steps=steps)
    with open(cfg_path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    for cb in cfg["callbacks"]:
        if cb["type"] == "BitCPMCheckpointMonitor":
            cb.update(save_checkpoint_steps=steps, preemption_check_steps=4)
    with open(cfg_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    ref, out = str(tmp_path / "ref"), str(tmp_path / "interval")
    proc = run_msrun(cfg_path, 2, str(tmp_path / "log_ref"), "--output_dir", ref, "--max_steps", steps)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    proc = _popen(cfg_path, str(tmp_path / "log_i"), "--output_dir", out, "--max_steps", steps)
    stdout, stderr = _sigterm_after_first_step(proc, out)
    assert proc.returncode == 75, tail(stdout + stderr)
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        k = [json.loads(line) for line in f if '"preempted"' in line][0]["after_step"]
    assert k % 4 == 0 and k < steps, k
    for rank in (0, 1):
        names = sorted(p for p in os.listdir(os.path.join(out, "checkpoint", f"rank_{rank}")) if p.endswith(".ckpt"))
        assert names == [f"dp_rank_{rank}-1_{k}.ckpt"], names
    resumed = run_msrun(cfg_path, 2, str(tmp_path / "log_i2"), "--output_dir", out, "--max_steps", steps,
                        "--resume_training", "true")
    assert resumed.returncode == 0, tail(resumed.stdout + resumed.stderr)
    for rank in (0, 1):
        name = os.path.join("checkpoint", f"rank_{rank}", f"dp_rank_{rank}-1_{steps}.ckpt")
        a, b = (model_and_optimizer(load_arrays(os.path.join(d, name))) for d in (out, ref))
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"rank {rank} {key}")
