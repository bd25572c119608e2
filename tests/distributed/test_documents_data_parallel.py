"""Packed-document training (use_eod_attn_mask_compression + the actual_seq_len column) through
the real entry points: 2 msrun workers x batch B/2 == 1 process x batch B, with distillation (the
teacher reads the same documents), and the 2-worker checkpoint resumed in one process.

Every row of the data holds the same documents' lengths (EOS at the same input positions), so
every rank counts the same number of loss tokens and the per-rank means average to the global
mean exactly (test_data_parallel.py explains why that matters)."""
import json
import os

import numpy as np
import pytest

from bitcpm_ms.testing import make_document_mindrecord, write_teacher

from ._util import (SMALL_MODEL, checkpoints, load_arrays, max_abs_diff, model_and_optimizer, run_msrun,
                    run_single, tail, write_config)

BATCH, DP_STEPS, SINGLE_STEPS = 8, 3, 4


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return {r["step"]: r for r in map(json.loads, f) if "step" in r}


@pytest.mark.slow            # 3 launches (one of 2 workers), ~2-3 min on 2 shared cores
def test_documents_under_msrun_with_distillation_and_resume(tmp_path):
    data = make_document_mindrecord(str(tmp_path / "data" / "train.mindrecord"), 64, SMALL_MODEL["seq_length"],
                                    SMALL_MODEL["vocab_size"], eos_at=(0, 9, 31))
    teacher_dims = dict(SMALL_MODEL, hidden_size=96, num_layers=2, intermediate_size=192, batch_size=BATCH)
    cfg, ckpt = write_teacher(str(tmp_path / "teacher"), teacher_dims, head_scale=20)
    distill = ["--distill.teacher_config", cfg, "--distill.teacher_checkpoint", ckpt,
               "--distill.temperature", "2.0", "--distill.alpha", "0.5"]
    single_cfg = write_config(str(tmp_path / "single.yaml"), data, str(tmp_path / "single"), BATCH, documents=True)
    dp_cfg = write_config(str(tmp_path / "dp.yaml"), data, str(tmp_path / "dp"), BATCH // 2, data_parallel=2,
                          documents=True)
    proc = run_single(single_cfg, *distill, "--max_steps", SINGLE_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    proc = run_msrun(dp_cfg, 2, str(tmp_path / "log"), *distill, "--max_steps", DP_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    single, rank0, rank1 = (checkpoints(str(tmp_path / "single")), checkpoints(str(tmp_path / "dp"), 0),
                            checkpoints(str(tmp_path / "dp"), 1))
    for step in range(1, DP_STEPS + 1):
        s, r0, r1 = (model_and_optimizer(load_arrays(x[step])) for x in (single, rank0, rank1))
        assert max_abs_diff(r0, r1) == 0.0
        assert max_abs_diff(s, r0) < 1e-6, f"step {step}"
    dp, one = _metrics(str(tmp_path / "dp")), _metrics(str(tmp_path / "single"))
    for step in range(1, DP_STEPS + 1):
        np.testing.assert_allclose(dp[step]["grad_norm"], one[step]["grad_norm"], rtol=1e-5)
        assert dp[step]["kd_loss"] > 0
    # the 2-worker step-3 checkpoint resumed in one process: the single run's step 4
    out = str(tmp_path / "resumed")
    proc = run_single(single_cfg, *distill, "--output_dir", out, "--load_checkpoint",
                      os.path.join(str(tmp_path / "dp"), "checkpoint"), "--resume_training", "true",
                      "--max_steps", SINGLE_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    resumed = checkpoints(out)
    assert sorted(resumed) == [4]
    assert max_abs_diff(model_and_optimizer(load_arrays(resumed[4])),
                        model_and_optimizer(load_arrays(single[4]))) < 1e-6
    assert abs(_metrics(out)[4]["loss"] - one[4]["loss"]) < 1e-5
