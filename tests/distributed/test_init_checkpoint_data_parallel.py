"""--init_from_checkpoint under msrun data parallel (2 workers): the path every pipeline-1
production run takes (their YAMLs require an init checkpoint).

bitcpm-ms builds that network itself (app/train_network.py), before MindFormers' Trainer would
have switched `@lazy_inline` off for pipeline 1 without gradient accumulation; built with lazy
inline on, the CPU data-parallel graph failed to compile ("Input[0] must be a Primitive
ValueNode"). Now the Trainer's rule is applied first (app/trainer_rules.py).
"""
import os

import pytest

from bitcpm_ms.testing import write_teacher

from ._util import (SMALL_MODEL, checkpoints, load_arrays, make_mindrecord, max_abs_diff, run_msrun, tail,
                    write_config)

BATCH, STEPS = 8, 2


@pytest.mark.slow
def test_two_workers_train_from_an_init_checkpoint(tmp_path):
    data = make_mindrecord(str(tmp_path / "data" / "train.mindrecord"), 32, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    _, init = write_teacher(str(tmp_path / "init"), dict(SMALL_MODEL, batch_size=BATCH // 2), seed=3)
    cfg = write_config(str(tmp_path / "dp.yaml"), data, str(tmp_path / "dp"), BATCH // 2, data_parallel=2)
    proc = run_msrun(cfg, 2, str(tmp_path / "log"), "--init_from_checkpoint", init, "--max_steps", STEPS)
    assert proc.returncode == 0, tail(proc.stdout + proc.stderr)
    with open(os.path.join(tmp_path / "log", "worker_0.log"), encoding="utf-8") as f:
        log = f.read()
    assert f"init: weights from {init}" in log
    assert "Input[0] must be a Primitive ValueNode" not in log
    rank0, rank1 = checkpoints(str(tmp_path / "dp"), 0), checkpoints(str(tmp_path / "dp"), 1)
    assert sorted(rank0) == sorted(rank1) == list(range(1, STEPS + 1))
    start = {k: v for k, v in load_arrays(init).items() if k.startswith(("model.", "lm_head."))}
    for step in range(1, STEPS + 1):
        r0, r1 = load_arrays(rank0[step]), load_arrays(rank1[step])
        weights0 = {k: r0[k] for k in start}
        assert max_abs_diff(weights0, {k: r1[k] for k in start}) == 0.0     # identical replicas
        moved = max_abs_diff(weights0, start)
        if step == 1:                        # step 1 runs at lr 0 (warmup): the init weights exactly
            assert moved == 0.0
        else:
            assert moved > 1e-4
