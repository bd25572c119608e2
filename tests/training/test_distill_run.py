"""Distillation through the runner (MindFormers' Trainer, graph mode): resume continues exactly."""
import pytest

from bitcpm_ms.testing import write_teacher

from ..helpers import (NO_DOCUMENTS, SMALL_MODEL, TINY_YAML, read_metrics, run_cli, step_records,
                       write_learnable_mindrecord)

# SMALL_MODEL's dims (tests/helpers.py), for the teacher
MODEL = {"hidden_size": 64, "num_layers": 2, "seq_length": 64, "vocab_size": 512, "intermediate_size": 128,
         "dim_model_base": 16, "num_heads": 4, "n_kv_heads": 2, "batch_size": 8}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("kd")
    write_learnable_mindrecord(str(d / "data" / "train.mindrecord"), n_samples=320, seq_length=64, vocab=512)
    cfg, ckpt = write_teacher(str(d / "teacher"), dict(MODEL, hidden_size=96, intermediate_size=192), head_scale=20)
    return d, ["--train_dataset.data_loader.dataset_dir", str(d / "data"), "--distill.teacher_config", cfg,
               "--distill.teacher_checkpoint", ckpt, "--distill.temperature", "2.0", "--distill.alpha", "0.5",
               "--lr_schedule.total_steps", "12", "--lr_schedule.warmup_ratio", "0.2",
               "--callbacks.BitCPMMetricsMonitor.log_interval", "1"]


def _train(out, args, *extra):
    res = run_cli(["--config", TINY_YAML, "--output_dir", str(out), *SMALL_MODEL, *NO_DOCUMENTS, *args, *extra])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_distillation_resumes_exactly(setup):
    d, args = setup
    _train(d / "straight", args, "--max_steps", "8")
    _train(d / "resumed", args, "--max_steps", "4")
    res = _train(d / "resumed", args, "--max_steps", "8", "--resume_training", "true")
    assert "distill: teacher" in res.stdout
    a, b = step_records(read_metrics(d / "straight")), step_records(read_metrics(d / "resumed"))
    assert b[5]["first_step_s"] is not None
    for step in (5, 6, 8):
        for key in ("loss", "ce_loss", "kd_loss", "lr"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-9), (step, key)
    assert a[8]["kd_loss"] > 0.01 and a[8]["loss"] < a[1]["loss"]
