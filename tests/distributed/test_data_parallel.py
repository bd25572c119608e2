"""Data parallel on CPU through msrun: 2 workers x batch B/2 == 1 process x batch B.

Why the comparison is exact up to float rounding:
  * MindFormers' CausalLanguageModelDataset gives MindDataset num_shards=world size,
    shard_id=rank in DATA_PARALLEL mode, and MindDataset (shuffle off) assigns rows round-robin:
    rank r gets rows r, r+2, r+4, ... So at step k rank r's batch of b rows is
    {2kb + 2j + r : j < b}, and the two ranks together hold exactly rows 2kb .. 2kb+2b-1, the
    single process's batch k of B = 2b rows (checked directly below).
  * Each rank's loss is the mean over its b*S tokens; `gradients_mean: True` averages the two
    gradients, which equals the gradient of the mean over all 2b*S tokens only when both ranks
    count the same number of tokens. The data therefore contains no pad id (0), which the LLaMA
    loss masks. (With masked tokens, data parallel and one process differ slightly: a per-rank
    mean of means, not a global token mean.)
"""
import json
import os

import numpy as np
import pytest

from ._util import (SMALL_MODEL, checkpoints, load_arrays, make_mindrecord, max_abs_diff, model_and_optimizer,
                    run_msrun, run_single, tail, write_config)

ROWS, BATCH, DP_STEPS, SINGLE_STEPS = 64, 8, 3, 5


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return {r["step"]: r for r in map(json.loads, f) if "step" in r}


def test_minddataset_round_robin_shards_cover_the_single_process_batches(tmp_path):
    import mindspore.dataset as ds
    data = make_mindrecord(str(tmp_path / "d" / "d.mindrecord"), 32, 8, 512)
    path = os.path.join(data, "d.mindrecord")

    def row_ids(batch, **shard):
        it = ds.MindDataset(path, columns_list=["input_ids"], shuffle=False, **shard).batch(batch)
        return [sorted(int(r[0]) for r in b["input_ids"]) for b in it.create_dict_iterator(output_numpy=True)]

    single = row_ids(4)
    ranks = [row_ids(2, num_shards=2, shard_id=r) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 8
    for k, batch in enumerate(single):
        assert sorted(ranks[0][k] + ranks[1][k]) == batch
        assert not set(ranks[0][k]) & set(ranks[1][k])


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory):
    """One 2-worker run (per-rank batch 4, 3 steps) and one single-process run (batch 8, 5 steps)."""
    root = tmp_path_factory.mktemp("dp")
    data = make_mindrecord(str(root / "data" / "train.mindrecord"), ROWS, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    single_cfg = write_config(str(root / "single.yaml"), data, str(root / "single"), BATCH, data_parallel=1)
    dp_cfg = write_config(str(root / "dp.yaml"), data, str(root / "dp"), BATCH // 2, data_parallel=2)
    proc = run_single(single_cfg, "--max_steps", SINGLE_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    proc = run_msrun(dp_cfg, 2, str(root / "log"), "--max_steps", DP_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    return {"root": root, "single": str(root / "single"), "dp": str(root / "dp"), "single_cfg": single_cfg,
            "log": str(root / "log")}


def test_two_workers_equal_one_process_on_the_same_global_batch(dp_runs):
    single = checkpoints(dp_runs["single"])
    rank0, rank1 = checkpoints(dp_runs["dp"], 0), checkpoints(dp_runs["dp"], 1)
    assert set(range(1, DP_STEPS + 1)) <= set(single) and sorted(rank0) == sorted(rank1) == [1, 2, 3]
    start = model_and_optimizer(load_arrays(single[1]))   # step 1 has lr 0 (warmup): weights = init
    for step in range(1, DP_STEPS + 1):
        s = model_and_optimizer(load_arrays(single[step]))
        r0 = model_and_optimizer(load_arrays(rank0[step]))
        r1 = model_and_optimizer(load_arrays(rank1[step]))
        assert len(s) >= 30                                  # 12 weights + adam_m + adam_v
        assert max_abs_diff(r0, r1) == 0.0                   # the ranks hold identical replicas
        assert max_abs_diff(s, r0) < 1e-6, f"step {step}"
        if step > 1:                                         # and the steps did move the weights
            moved = max(float(np.abs(s[k] - start[k]).max()) for k in s if not k.startswith("adam"))
            assert moved > 1e-3
    ms_single, ms_dp = _metrics(dp_runs["single"]), _metrics(dp_runs["dp"])
    for step in range(1, DP_STEPS + 1):
        # the global gradient norm after the all-reduce equals the single process's
        np.testing.assert_allclose(ms_dp[step]["grad_norm"], ms_single[step]["grad_norm"], rtol=1e-5)
        assert ms_dp[step]["tokens_seen"] == ms_single[step]["tokens_seen"]  # both count the global batch


def test_each_rank_logs_to_its_own_file(dp_runs):
    for rank in (0, 1):
        with open(os.path.join(dp_runs["log"], f"worker_{rank}.log"), encoding="utf-8") as f:
            text = f.read()
        assert "Training Over" in text
    with open(os.path.join(dp_runs["log"], "worker_0.log"), encoding="utf-8") as f:
        assert f"step {DP_STEPS}/{DP_STEPS}" in f.read()                # metrics console line: rank 0 only


def test_two_worker_checkpoint_resumes_in_one_process(dp_runs):
    """Resume the 2-worker step-3 checkpoint in a single process up to step 5: same state as the
    single process that trained 5 steps (weights, Adam moments, step count, data position)."""
    out = str(dp_runs["root"] / "resumed")
    proc = run_single(dp_runs["single_cfg"], "--output_dir", out,
                      "--load_checkpoint", os.path.join(dp_runs["dp"], "checkpoint"),
                      "--resume_training", "true", "--max_steps", SINGLE_STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    resumed, single = checkpoints(out), checkpoints(dp_runs["single"])
    assert sorted(resumed) == [4, 5]
    for step in (4, 5):
        assert max_abs_diff(model_and_optimizer(load_arrays(resumed[step])),
                            model_and_optimizer(load_arrays(single[step]))) < 1e-6, f"step {step}"
