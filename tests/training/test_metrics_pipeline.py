"""Metrics under pipeline parallelism (the 32K config: pp 2, 32 micro-batches): the loss is logged
by a rank of the last stage, divided by the micro-batch count, as MindFormers' MFLossMonitor does
(mindformers/core/callback/callback.py `_fix_loss_for_parallel`, compared with it directly)."""
import json
import os
from types import SimpleNamespace

import pytest
import mindspore as ms
from mindformers.core.callback.callback import MFLossMonitor

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.train import prepare_callbacks
from bitcpm_ms.training import BitCPMMetricsMonitor
from bitcpm_ms.training.metrics import loss_divisor, metrics_rank
from bitcpm_ms.testing import REPO

YAML_32K = os.path.join(REPO, "yaml_configs", "pretrain_bitcpm_8b_32k_910b.yaml")


@pytest.mark.parametrize("stages", [1, 2, 4])
@pytest.mark.parametrize("micro", [1, 8, 32])
@pytest.mark.parametrize("accumulation", [1, 4])
@pytest.mark.parametrize("interleave", [1, 2])
@pytest.mark.parametrize("per_token", [False, True])
def test_divisor_equals_mindformers_own(parallel_context, stages, micro, accumulation, interleave, per_token):
    parallel_context(pipeline_stages=stages)
    holder = SimpleNamespace(print_warning_flag=False, micro_batch_interleave_num=interleave, mirco_size=micro,
                             calculate_per_token_loss=per_token, gradient_accumulation_steps=accumulation)
    fixed = MFLossMonitor._fix_loss_for_parallel(holder, 1.0)        # pylint: disable=protected-access
    assert 1.0 / loss_divisor(stages, micro, accumulation, interleave, per_token) == pytest.approx(fixed)


def test_metrics_rank_is_the_first_rank_of_the_last_stage():
    assert metrics_rank(16, 2) == 8            # 32K config on 2 x 8 NPUs: dp 4 x cp 2 x pp 2
    assert metrics_rank(8, 2) == 4             # the same on one node (dp 2)
    assert metrics_rank(16, 4) == 12
    assert metrics_rank(16, 1) == 0 and metrics_rank(1, 1) == 0
    assert metrics_rank(16, 2, "zero_bubble_v") == 0     # V schedule: last layer on stage 0
    assert metrics_rank(6, 4) == 0                       # no valid split: no pipeline runs


class _Net:
    """A train network stand-in (no model config: no FLOP count), optionally MindFormers' micro_size."""

    def __init__(self, micro_size=None):
        if micro_size is not None:
            self.micro_size = micro_size

    def cells_and_names(self):
        yield "", self


def _run_one_step(monitor, summed_loss, network):
    cb = SimpleNamespace(train_network=network, epoch_num=1, batch_num=10, cur_step_num=1,
                         net_outputs=(ms.Tensor(summed_loss, ms.float32), ms.Tensor(False), 1.0,
                                      ms.Tensor(2.5e-3, ms.float32), ms.Tensor(1.5, ms.float32)),
                         train_dataset_element=(), train_dataset=None)
    ctx = SimpleNamespace(original_args=lambda: cb)
    monitor.on_train_begin(ctx)
    monitor.on_train_step_end(ctx)
    monitor.on_train_end(ctx)


def _records(out_dir):
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_32k_config_logs_the_last_stage_loss_divided_by_the_micro_batches(parallel_context, tmp_path, capsys):
    """The 32K YAML's callback as app/train.py prepares it, 16 ranks, pp 2: rank 8 writes the
    per-token mean loss (the pipeline wrapper's sum / 32); rank 0 (stage 0) writes nothing."""
    parallel_context(parallel_mode="semi_auto_parallel", full_batch=True, pipeline_stages=2)
    config = load_config(YAML_32K, {"output_dir": str(tmp_path)})
    prepare_callbacks(config)
    (args,) = [dict(cb) for cb in config.callbacks if cb["type"] == "BitCPMMetricsMonitor"]
    assert args["micro_batch_num"] == 32 and args["gradient_accumulation_steps"] == 1
    args.pop("type")
    for rank in (0, 8):
        out = tmp_path / f"rank{rank}"
        monitor = BitCPMMetricsMonitor(**dict(args, output_dir=str(out)), device_num=16, rank_id=rank)
        assert monitor.metrics_rank == 8 and monitor.loss_divisor == 32
        _run_one_step(monitor, 32 * 2.5, _Net())
        printed = capsys.readouterr().out
        if rank == 0:
            assert _records(out) == [] and "loss" not in printed
        else:
            steps = [r for r in _records(out) if "step" in r]
            assert steps[0]["loss"] == pytest.approx(2.5) and steps[0]["grad_norm"] == pytest.approx(1.5)
            assert "loss 2.5000" in printed
            begin = _records(out)[0]
            assert begin["metrics_rank"] == 8 and begin["loss_divisor"] == 32


def test_without_prepared_arguments_the_wrapper_micro_size_is_used(parallel_context, tmp_path):
    """run_mindformer.py builds the callback from the YAML alone: the divisor comes from
    MFPipelineWithLossScaleCell's micro_size (pipeline) at train begin."""
    parallel_context(parallel_mode="semi_auto_parallel", pipeline_stages=2)
    monitor = BitCPMMetricsMonitor(output_dir=str(tmp_path), device_num=8, rank_id=4)
    _run_one_step(monitor, 16 * 3.0, _Net(micro_size=16))
    assert monitor.loss_divisor == 16
    assert [r for r in _records(tmp_path) if "step" in r][0]["loss"] == pytest.approx(3.0)


def test_without_pipeline_rank_0_logs_the_loss_unchanged(parallel_context, tmp_path):
    parallel_context(parallel_mode="data_parallel")
    monitor = BitCPMMetricsMonitor(output_dir=str(tmp_path), device_num=2, rank_id=0, micro_batch_num=8)
    _run_one_step(monitor, 2.75, _Net())
    assert monitor.metrics_rank == 0 and monitor.loss_divisor == 1
    assert [r for r in _records(tmp_path) if "step" in r][0]["loss"] == pytest.approx(2.75)
