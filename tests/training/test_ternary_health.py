"""Ternary health in the metrics: the tracker over a model's ternary layers, and metrics.jsonl fields."""
import numpy as np
import mindspore as ms

from bitcpm_ms.quant import QuantConfig
from bitcpm_ms.quant.health import weight_health
from bitcpm_ms.testing import random_bitcpm
from bitcpm_ms.training.ternary_health import TernaryHealth, _rows

MODEL = dict(seq_length=16, hidden_size=64, num_layers=1, num_heads=2, n_kv_heads=1, intermediate_size=128,
             vocab_size=64, dim_model_base=16)
QUANT = dict(enabled=True, quant_space="ternary", group_size=32)


def test_rows_are_whole_and_within_the_sample():
    assert list(_rows(4, 8, 1 << 18)) == [0, 1, 2, 3]
    rows = _rows(1000, 64, 64 * 10)
    assert len(rows) == 10 and rows[0] == 0 and rows[-1] == 999
    assert len(_rows(5, 1000, 10)) == 1                          # at least one row


def test_tracker_sums_every_ternary_layer_and_counts_changes():
    net = random_bitcpm(MODEL, QUANT, seed=3)
    tracker = TernaryHealth()
    first = tracker.measure(net)
    layers = tracker.layers(net)
    assert len(layers) == 7                                      # q k v o w1 w2 w3
    cfg = QuantConfig(**QUANT)
    zero = sum(weight_health(c.weight.asnumpy(), cfg)[0].zero for _, c in layers)
    total = sum(c.weight.asnumpy().size for _, c in layers)
    assert first["code_change_frac"] is None
    assert abs(first["zero_code_frac"] - zero / total) < 1e-12
    assert 0 < first["near_boundary_frac"] < 1
    # move one layer's weights: the changed share is that layer's changed codes over all weights
    _, cell = layers[0]
    before = weight_health(cell.weight.asnumpy(), cfg)[1]
    moved = cell.weight.asnumpy() * -1.0
    cell.weight.set_data(ms.Tensor(moved))
    second = tracker.measure(net)
    changed = int(np.count_nonzero(weight_health(moved, cfg)[1] != before))
    assert changed > 0 and abs(second["code_change_frac"] - changed / total) < 1e-12


def test_sampled_rows_are_read_on_the_device():
    net = random_bitcpm(MODEL, QUANT, seed=3)
    tracker = TernaryHealth(sample=64 * 4)                       # 4 rows of each 64-wide layer
    _, cell = tracker.layers(net)[0]
    got = tracker._read(cell)
    np.testing.assert_array_equal(got, cell.weight.asnumpy()[_rows(cell.weight.shape[0], 64, 256)])


def test_full_precision_model_logs_no_health():
    assert TernaryHealth().measure(random_bitcpm(MODEL, None, seed=3)) == {}


def test_metrics_jsonl_has_the_health_fields_at_each_log(tmp_path, capsys):
    import json
    from types import SimpleNamespace
    from bitcpm_ms.training.metrics import BitCPMMetricsMonitor
    net = random_bitcpm(MODEL, QUANT, seed=4)
    monitor = BitCPMMetricsMonitor(log_interval=2, output_dir=str(tmp_path), total_steps=4)
    cb = SimpleNamespace(train_network=net, epoch_num=1, batch_num=4, cur_step_num=0,
                         net_outputs=(ms.Tensor(2.0, ms.float32), ms.Tensor(False), 1.0,
                                      ms.Tensor(1e-3, ms.float32), ms.Tensor(1.0, ms.float32)),
                         train_dataset_element=(), train_dataset=None)
    ctx = SimpleNamespace(original_args=lambda: cb)
    monitor.on_train_begin(ctx)
    for step in (1, 2, 3, 4):
        cb.cur_step_num = step
        monitor.on_train_step_end(ctx)
    with open(tmp_path / "metrics.jsonl", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if '"step"' in line]
    assert [r["step"] for r in recs] == [1, 2, 4]
    assert recs[0]["code_change_frac"] is None and recs[1]["code_change_frac"] == 0.0   # weights did not move
    assert all(0 < r["zero_code_frac"] < 1 and "ternary_health_ms" in r for r in recs)
    assert "zeros " in capsys.readouterr().out
    off = BitCPMMetricsMonitor(output_dir=str(tmp_path / "off"), ternary_health=False)
    assert off._health is None
