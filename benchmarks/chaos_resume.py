#!/usr/bin/env python3
"""Chaos test of crash-safe training: kill -9 a small training run at random moments, resume, repeat.

    python3 -m benchmarks.chaos_resume [--kills 10] [--steps 60] [--save_every 4] [--keep 2] [--seed 0]

One uninterrupted run of `--steps` steps is the reference. Then the same run is started in another
output directory and killed with SIGKILL `--kills` times: every other kill at a random moment (a
random step boundary of the steps still to go, plus a random fraction of a step), the others while
a checkpoint is being written (as soon as a `.tmp-<pid>` directory appears in the rank directory).
After every kill the checkpoint directory is inspected: a `.ckpt` that does not match its sidecar or
has none is a torn file (there must be none). The run is then resumed with `--resume_training true`,
until it reaches `--steps`. Each kill's resume is checked on its own, when that resumed process
ends (killed in turn, or finished): it must start at the step after the newest good checkpoint,
every step it logged must have the reference's loss and gradient norm exactly, and a checkpoint it
published must equal the reference's checkpoint of that step bit for bit (the reference keeps all
of its checkpoints). A kill counts as survived only when its resume passes all of that. At the end
the final weights and Adam moments are compared bit for bit with the reference. Time lost per kill: the chaos session's wall time minus the reference's,
divided by the kills; also per kill the steps that had to be redone.

The model is bitcpm_ms.testing.SMALL_MODEL (1 layer, hidden 64, sequence 32, batch 4), so a run
takes seconds plus MindSpore's start-up and graph compilation. Prints a table and writes
benchmarks/results/chaos_resume.json.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.machine import target, write_results
from bitcpm_ms.testing import SMALL_MODEL, make_mindrecord, write_config
from bitcpm_ms.training.checkpoint_files import TMP_PREFIX, list_checkpoints, verify_checkpoint

RUNNER = os.path.join(REPO, "run", "run_bitcpm.py")


def logged_records(out, since=0.0):
    """Step records ({step, loss, grad_norm, ...}) in OUTPUT/metrics.jsonl logged after time `since`."""
    try:
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f if '"loss"' in line]
    except (OSError, ValueError):
        return []
    return [r for r in records if r.get("time", 0) > since]


def logged_steps(out, since=0.0):
    """Steps logged in OUTPUT/metrics.jsonl after time `since` (the current process's start)."""
    return [r["step"] for r in logged_records(out, since)]


def start(cfg, out, steps, resume, save_every, keep):
    cmd = [sys.executable, RUNNER, "--config", cfg, "--output_dir", out, "--max_steps", str(steps),
           "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps", str(save_every),
           "--callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max", str(keep)]
    if resume:
        cmd += ["--resume_training", "true"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def inspect(rank_dir):
    """(torn checkpoint files, leftover tmp dirs, newest good step) of a rank directory."""
    torn, newest = [], None
    for e in list_checkpoints(rank_dir):
        problem = verify_checkpoint(e.path, e.sidecar)
        if problem:
            torn.append(f"{e.name} {problem}")
        elif e.sidecar is not None:
            newest = e.step
    tmp = [n for n in os.listdir(rank_dir) if n.startswith(TMP_PREFIX)] if os.path.isdir(rank_dir) else []
    return torn, tmp, newest


def kill_when(proc, out, rank_dir, mode, target_step, rng, step_time, since):
    """Wait for the kill moment (after `target_step`: a random fraction of a step later, or during the
    next checkpoint write), SIGKILL the run; returns (killed, what, last logged step)."""
    deadline = time.time() + 900
    reached = False
    while time.time() < deadline and proc.poll() is None:
        if mode == "write" and not reached:
            reached = max(logged_steps(out, since) or [0]) >= target_step
            time.sleep(0.005)
        elif mode == "write":       # this process's own temporary directory: a save is under way
            if os.path.isdir(os.path.join(rank_dir, f"{TMP_PREFIX}{proc.pid}")):
                delay = rng.uniform(0, 0.004)            # somewhere in the write / hash / sidecar / rename
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True, f"in the save after step {target_step} (+{delay * 1e3:.1f} ms)", \
                    max(logged_steps(out, since) or [0])
            time.sleep(0.0005)
        else:
            if max(logged_steps(out, since) or [0]) >= target_step:
                frac = rng.random()
                time.sleep(frac * step_time)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True, f"random (step {target_step} + {frac:.2f} step)", max(logged_steps(out, since) or [0])
            time.sleep(0.005)
    proc.wait()
    return False, "finished before the kill", max(logged_steps(out, since) or [0])


def ckpt_state(path):
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()
            if k.startswith(("model.", "lm_head.", "adam_m.", "adam_v.", "global_step", "skipped_steps"))}


def final_state(out, steps):
    return ckpt_state(os.path.join(out, "checkpoint", "rank_0", f"dp_rank_0-1_{steps}.ckpt"))


def same_state(a, b):
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def check_resume(run, ref, since, resumed_from, reference_log):
    """The verdict on one resumed process (started at time `since` from checkpoint step `resumed_from`,
    None = from scratch) once it has ended: first step, logged losses / norms, its newest checkpoint."""
    records = logged_records(run, since)
    first = (resumed_from or 0) + 1
    problems = []
    if not records:
        problems.append("logged no step")
    elif records[0]["step"] != first:
        problems.append(f"first logged step {records[0]['step']}, expected {first}")
    for r in records:
        want = reference_log.get(r["step"])
        if want is None or (r["loss"], r["grad_norm"]) != want:
            problems.append(f"step {r['step']}: loss/grad_norm {(r['loss'], r['grad_norm'])} != reference {want}")
    ckpt_checked = None
    own = [e for e in list_checkpoints(os.path.join(run, "checkpoint", "rank_0"))
           if e.step > (resumed_from or 0) and e.sidecar is not None and not verify_checkpoint(e.path, e.sidecar)]
    if own:
        newest = max(own, key=lambda e: e.step)
        refs = {e.step: e.path for e in list_checkpoints(os.path.join(ref, "checkpoint", "rank_0"))}
        ckpt_checked = newest.step
        if newest.step not in refs or not same_state(ckpt_state(newest.path), ckpt_state(refs[newest.step])):
            problems.append(f"checkpoint of step {newest.step} differs from the reference's")
    return {"steps_logged": [records[0]["step"], records[-1]["step"]] if records else [],
            "checkpoint_compared": ckpt_checked, "problems": problems[:5], "ok": not problems}


def chaos(workdir, kills=10, steps=60, save_every=4, keep=2, seed=0, log=print):
    rng = random.Random(seed)
    data = make_mindrecord(os.path.join(workdir, "data", "train.mindrecord"), steps * 4 + 64,
                           SMALL_MODEL["seq_length"], SMALL_MODEL["vocab_size"])
    cfg = write_config(os.path.join(workdir, "cfg.yaml"), data, os.path.join(workdir, "unused"), 4, total_steps=steps)
    ref, run = os.path.join(workdir, "reference"), os.path.join(workdir, "chaos")
    rank_dir = os.path.join(run, "checkpoint", "rank_0")

    t0 = time.time()
    p = start(cfg, ref, steps, False, save_every, steps)        # the reference keeps every checkpoint
    err = p.communicate()[1]
    if p.returncode:
        raise RuntimeError(f"reference run failed: {err[-2000:]}")
    t_ref = time.time() - t0
    log(f"reference: {steps} steps in {t_ref:.1f} s")
    reference_log = {r["step"]: (r["loss"], r["grad_norm"]) for r in logged_records(ref)}

    # kill moments spread over the run: sorted random steps, so every restart gets further
    targets = sorted(rng.sample(range(1, steps - save_every), kills))
    events, torn_seen, t0 = [], [], time.time()
    step_time = 0.05
    resume = False
    while True:
        k = len(events)
        t_start = time.time()
        proc = start(cfg, run, steps, resume, save_every, keep)
        if k >= kills:
            err = proc.communicate()[1]
            if proc.returncode:
                raise RuntimeError(f"final resumed run failed: {err[-2000:]}")
            events[-1]["resume"] = check_resume(run, ref, t_start, events[-1]["resumes_from"], reference_log)
            break
        mode = "write" if k % 2 else "random"
        target = targets[k]
        t_kill0 = time.time()
        killed, what, last = kill_when(proc, run, rank_dir, mode, target, rng, step_time, t_kill0)
        if not killed:
            raise RuntimeError(f"kill {k + 1}: the run finished before it could be killed ({what})")
        if k:                                   # this process was kill k's resume: judge it now
            events[-1]["resume"] = check_resume(run, ref, t_start, events[-1]["resumes_from"], reference_log)
        torn, tmp, newest = inspect(rank_dir)
        torn_seen += torn
        events.append({"kill": k + 1, "when": what, "last_logged_step": last, "resumes_from": newest,
                       "steps_redone": last - (newest or 0), "torn_files": torn, "tmp_left": tmp,
                       "run_s": round(time.time() - t_kill0, 2)})
        log(f"kill {k + 1:2d}: {what:42s} last logged step {last:3d}, newest good checkpoint {newest}, "
            f"torn {len(torn)}, tmp dirs left {len(tmp)}")
        resume = newest is not None
    t_chaos = time.time() - t0

    a, b = final_state(ref, steps), final_state(run, steps)
    identical = same_state(a, b)
    max_diff = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)
    redone = [e["steps_redone"] for e in events]
    survived = sum(1 for e in events if e["resume"]["ok"] and not e["torn_files"])
    return {"kills": kills, "kills_survived": survived, "steps": steps,
            "survival": "each kill counts when its resumed process started after the newest good checkpoint, "
                        "logged the reference's loss and grad norm at every step and published checkpoints "
                        "equal to the reference's, with no torn file after the kill",
            "save_every": save_every, "keep_checkpoint_max": keep, "seed": seed,
            "kills_during_write": sum(1 for e in events if e["when"].startswith("in the save")),
            "torn_files_seen": len(torn_seen), "final_bit_identical": identical, "final_max_abs_diff": max_diff,
            "tensors_compared": len(a), "reference_s": round(t_ref, 2), "chaos_s": round(t_chaos, 2),
            "time_lost_per_kill_s": round((t_chaos - t_ref) / kills, 2),
            "steps_redone_per_kill": {"median": float(np.median(redone)), "min": min(redone), "max": max(redone)},
            "events": events}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--save_every", type=int, default=4)
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "chaos_resume.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chaos_") as work:
        res = chaos(work, args.kills, args.steps, args.save_every, args.keep, args.seed)
    print()
    print("| kills | during a write | resumes exact (each kill's own check) | final bit-identical | torn files seen "
          "| time lost per kill | steps redone per kill (median, min-max) |")
    print("|---|---|---|---|---|---|---|")
    s = res["steps_redone_per_kill"]
    print(f"| {res['kills']} | {res['kills_during_write']} | {res['kills_survived']} of {res['kills']} "
          f"| {res['final_bit_identical']} ({res['tensors_compared']} tensors) | {res['torn_files_seen']} | "
          f"{res['time_lost_per_kill_s']:.1f} s | {s['median']:.0f} ({s['min']}-{s['max']}) |")
    for e in res["events"]:
        if not e["resume"]["ok"]:
            print(f"kill {e['kill']}: resume failed: {'; '.join(e['resume']['problems'])}")
    print(f"reference {res['reference_s']:.1f} s, chaos session {res['chaos_s']:.1f} s ({args.steps} steps, "
          f"checkpoint every {args.save_every}, keep {args.keep})")
    n = res["kills_survived"] if res["final_bit_identical"] else 0
    res["targets"] = [target("kill -9 at random moments: each resume continues exactly, final state bit-identical",
                             n, [n, n], res["kills"], unit=f" of {res['kills']}",
                             method="counted per kill (see 'survival'); a count, no spread")]
    write_results(res, args.json)
    ok = res["final_bit_identical"] and res["torn_files_seen"] == 0 and res["kills_survived"] == res["kills"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
