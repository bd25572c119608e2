"""End-to-end: the YAML runner trains the tiny model in graph mode, logs metrics, resumes exactly."""
import json
import os

import pytest

from ..helpers import (NO_DOCUMENTS, SMALL_MODEL, TINY_YAML, read_metrics, run_cli, step_records,
                       write_learnable_mindrecord)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mr")
    write_learnable_mindrecord(str(d / "train.mindrecord"), n_samples=320, seq_length=64, vocab=512)
    return str(d)


def _train(out, data_dir, *extra):
    res = run_cli(["--config", TINY_YAML, "--output_dir", str(out), "--train_dataset.data_loader.dataset_dir",
                   data_dir, *SMALL_MODEL, *NO_DOCUMENTS, *extra])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.parametrize("quant_enabled", ["true", "false"])
def test_loss_falls_in_graph_mode(tmp_path, data_dir, quant_enabled):
    res = _train(tmp_path, data_dir, "--max_steps", "40", "--quant.enabled", quant_enabled)
    steps = step_records(read_metrics(tmp_path))
    assert sorted(steps) == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    first, last = steps[1]["loss"], steps[40]["loss"]
    assert last < first - 0.5, (first, last)
    rec = steps[40]
    for key in ("lr", "grad_norm", "tokens_per_s", "tflops_per_device", "step_time_s", "skipped_steps"):
        assert rec[key] is not None, key
    assert rec["tokens_seen"] == 40 * 8 * 64 and rec["skipped_steps"] == 0
    assert "eval_after_train skipped" in res.stderr      # toy data has no manifest
    assert "loss" in res.stdout and "tok/s" in res.stdout and "TFLOP/s" in res.stdout
    resolved = json.load(open(tmp_path / "config_resolved.json"))
    assert resolved["model"]["model_config"]["qat_config"]["enabled"] is (quant_enabled == "true")
    assert resolved["context"]["mode"] == 0
    assert any(f.endswith(".ckpt") for f in os.listdir(tmp_path / "checkpoint" / "rank_0"))


def test_resume_continues_exactly(tmp_path, data_dir):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(straight, data_dir, "--max_steps", "20")
    _train(resumed, data_dir, "--max_steps", "10")
    _train(resumed, data_dir, "--max_steps", "20", "--resume_training", "true")
    a, b = step_records(read_metrics(straight)), step_records(read_metrics(resumed))
    assert b[11]["first_step_s"] is not None            # the resumed run starts at step 11
    for step in (15, 20):
        assert abs(a[step]["loss"] - b[step]["loss"]) < 1e-5, (step, a[step]["loss"], b[step]["loss"])
        assert abs(a[step]["lr"] - b[step]["lr"]) < 1e-9
