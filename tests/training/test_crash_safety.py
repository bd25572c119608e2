"""End to end: SIGTERM mid-run saves and exits 75, the resumed run equals an uninterrupted one step
for step; a truncated and a bit-flipped newest checkpoint are named and the previous one is used;
a stale lock of a killed run is taken over; pruning keeps one prefix. The four runs (1-layer
SMALL_MODEL) happen in one subprocess, `_crash_driver.py`, through the bitcpm-train entry point."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bitcpm_ms.testing import REPO

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_crash_driver.py")


def _records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _losses(path):
    return {r["step"]: r["loss"] for r in _records(path) if "loss" in r}      # the last record of a step wins


def _state(path):
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()
            if k.startswith(("model.", "lm_head.", "adam_m.", "adam_v.", "global_step", "skipped_steps"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, DRIVER, str(root)], capture_output=True, text=True, timeout=900,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(root / "results.json"))
    assert res["k"] is not None, res["a"]["stdout"][-3000:] + res["a"]["stderr"][-3000:]
    res["root"] = root
    return res


def _ok(res):
    assert res["rc"] == 0, res["stdout"][-3000:] + res["stderr"][-3000:]


def test_sigterm_saves_after_the_current_step_and_exits_75(runs):
    a, k = runs["a"], runs["k"]
    assert a["rc"] == 75, a["stdout"][-2000:] + a["stderr"][-2000:]
    assert f"Training stopped by SIGTERM after step {k}" in a["stdout"] and "--resume_training true" in a["stdout"]
    assert "received SIGTERM: finishing the current step" in a["stderr"]
    assert "taking over" in a["stderr"] and "ended without releasing it" in a["stderr"]    # the planted stale lock
    from bitcpm_ms.training.checkpoint_files import read_sidecar, verify_checkpoint
    path = os.path.join(runs["root"], "a", "checkpoint", "rank_0", f"dp_rank_0-1_{k}.ckpt")
    assert verify_checkpoint(path) is None and read_sidecar(path)["step"] == k
    events = [r.get("event") for r in _records(os.path.join(runs["root"], "a", "metrics.jsonl"))]
    assert events.index("preempted") < events.index("train_end")


def test_resume_after_sigterm_equals_the_uninterrupted_run_step_for_step(runs):
    _ok(runs["a_resume"])
    _ok(runs["r"])
    a = _losses(os.path.join(runs["root"], "a", "metrics.jsonl"))
    r = _losses(os.path.join(runs["root"], "r_metrics.jsonl"))
    assert sorted(a) == sorted(r) == list(range(1, runs["last"] + 1))
    assert [a[s] for s in sorted(a)] == [r[s] for s in sorted(r)]              # bit-identical losses
    resume = [x for x in _records(os.path.join(runs["root"], "a", "metrics.jsonl")) if x.get("event") == "resume"]
    assert resume[0]["from_step"] == runs["k"] and resume[0]["superseded_steps"] is None
    fa = _state(os.path.join(runs["root"], "a", "checkpoint", "rank_0", f"dp_rank_0-1_{runs['last']}.ckpt"))
    fr = _state(os.path.join(runs["root"], "r_final.ckpt"))
    assert sorted(fa) == sorted(fr) and len(fa) > 10
    for key in fa:
        np.testing.assert_array_equal(fa[key], fr[key], err_msg=key)


def test_pruning_keeps_the_newest_three_under_one_prefix(runs):
    last = runs["last"]
    assert runs["r_names"] == sorted(f"dp_rank_0-1_{s}.ckpt" for s in (last - 2, last - 1, last))


def test_corrupt_newest_checkpoints_are_named_and_the_previous_one_is_used(runs):
    c, last = runs["c"], runs["last"]
    _ok(c)
    assert f"dp_rank_0-1_{last}.ckpt is truncated" in c["stderr"]
    assert f"dp_rank_0-1_{last - 1}.ckpt is corrupt: sha256" in c["stderr"]
    assert f"falling back to" in c["stderr"] and f"dp_rank_0-1_{last - 2}.ckpt (step {last - 2})" in c["stderr"]
    ckpt = os.path.join(runs["root"], "r", "checkpoint", "rank_0")
    assert os.path.exists(os.path.join(ckpt, f"dp_rank_0-1_{last}.ckpt.corrupt"))     # kept as evidence
    metrics = os.path.join(runs["root"], "r", "metrics.jsonl")
    resume = [x for x in _records(metrics) if x.get("event") == "resume"][-1]
    assert resume["from_step"] == last - 2 and resume["superseded_steps"] == [last - 1, last]
    assert len(resume["rejected"]) == 2
    fc = _state(os.path.join(ckpt, f"dp_rank_0-1_{last}.ckpt"))
    fr = _state(os.path.join(runs["root"], "r_final.ckpt"))
    for key in fr:
        np.testing.assert_array_equal(fc[key], fr[key], err_msg=key)
    assert _losses(metrics)[last] == _losses(os.path.join(runs["root"], "r_metrics.jsonl"))[last]


def test_skipped_steps_are_restored_and_counted_by_max_steps(runs):
    """Steps skipped as non-finite do not advance the optimizer's global_step; the step shown, the
    checkpoint names and --max_steps count them too, also after a resume."""
    _ok(runs["s"])
    _ok(runs["s_resume"])
    from bitcpm_ms.training.checkpoint_files import read_sidecar
    metrics = os.path.join(runs["root"], "s", "metrics.jsonl")
    steps = {r["step"]: r for r in _records(metrics) if "loss" in r}
    assert sorted(steps) == [1, 2, 3, 4, 5]                    # stopped at --max_steps 5, not 3 + 5
    assert [steps[s]["skipped_steps"] for s in (3, 4, 5)] == [3, 4, 5]
    assert all(steps[s]["overflow"] for s in steps)
    info = read_sidecar(os.path.join(runs["root"], "s", "checkpoint", "rank_0", "dp_rank_0-1_5.ckpt"))
    assert info["step"] == 5 and info["skipped_steps"] == 5 and info["global_step"] == 0
