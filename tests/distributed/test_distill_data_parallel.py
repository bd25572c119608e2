"""Distillation under msrun data parallel: 2 workers x batch B/2 == 1 process x batch B (as
test_data_parallel.py for plain QAT), the teacher replicated on each rank and in no checkpoint."""
import json
import os

import numpy as np
import pytest

from bitcpm_ms.testing import write_teacher

from ._util import (SMALL_MODEL, checkpoints, load_arrays, make_mindrecord, max_abs_diff, model_and_optimizer,
                    run_msrun, run_single, tail, write_config)

STEPS, BATCH = 3, 8


@pytest.mark.slow
def test_two_workers_distil_like_one_process(tmp_path):
    data = make_mindrecord(str(tmp_path / "data" / "train.mindrecord"), 64, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    teacher_dims = dict(SMALL_MODEL, hidden_size=96, num_layers=2, intermediate_size=192, batch_size=BATCH)
    cfg, ckpt = write_teacher(str(tmp_path / "teacher"), teacher_dims, head_scale=20)
    distill = ["--distill.teacher_config", cfg, "--distill.teacher_checkpoint", ckpt,
               "--distill.temperature", "2.0", "--distill.alpha", "0.5", "--max_steps", STEPS]
    single_cfg = write_config(str(tmp_path / "single.yaml"), data, str(tmp_path / "single"), BATCH)
    dp_cfg = write_config(str(tmp_path / "dp.yaml"), data, str(tmp_path / "dp"), BATCH // 2, data_parallel=2)
    proc = run_single(single_cfg, *distill)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    proc = run_msrun(dp_cfg, 2, str(tmp_path / "log"), *distill)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    single, rank0, rank1 = checkpoints(str(tmp_path / "single")), checkpoints(str(tmp_path / "dp"), 0), \
        checkpoints(str(tmp_path / "dp"), 1)
    for step in range(1, STEPS + 1):
        s, r0, r1 = (model_and_optimizer(load_arrays(x[step])) for x in (single, rank0, rank1))
        assert max_abs_diff(r0, r1) == 0.0
        assert max_abs_diff(s, r0) < 1e-6, f"step {step}"
    for path in list(rank0.values()) + list(rank1.values()):
        assert not [k for k in load_arrays(path) if "teacher" in k]
    with open(os.path.join(tmp_path / "dp", "metrics.jsonl"), encoding="utf-8") as f:
        dp = {r["step"]: r for r in map(json.loads, f) if "step" in r}
    with open(os.path.join(tmp_path / "single", "metrics.jsonl"), encoding="utf-8") as f:
        one = {r["step"]: r for r in map(json.loads, f) if "step" in r}
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(dp[step]["grad_norm"], one[step]["grad_norm"], rtol=1e-5)
        assert dp[step]["kd_loss"] > 0 and "ce_loss" in dp[step]
