import json
import math
import os

import numpy as np
import pytest

from bitcpm_ms.training.evaluation import evaluate_lm, metrics_from_totals, write_eval_json


def test_metric_arithmetic():
    m = metrics_from_totals(total_nll_nats=1000.0, tokens=400, n_bytes=1200)
    assert m["loss"] == pytest.approx(2.5)
    assert m["perplexity"] == pytest.approx(math.exp(2.5))
    assert m["bits_per_token"] == pytest.approx(2.5 / math.log(2))
    assert m["bits_per_byte"] == pytest.approx(1000.0 / math.log(2) / 1200)
    # uniform model over V symbols, one byte per token: bpb == log2 V
    V = 256
    u = metrics_from_totals(10 * math.log(V), 10, 10)
    assert u["bits_per_byte"] == pytest.approx(8.0) and u["perplexity"] == pytest.approx(V)
    assert metrics_from_totals(1.0, 1)["bits_per_byte"] is None


class _ConstLoss:
    """Stand-in network: returns a fixed mean loss per batch, records calls."""
    pad_token_id = 0

    def __init__(self, losses):
        self.losses, self.calls, self.training = list(losses), 0, False

    def set_train(self, flag=True):
        self.training = flag

    def __call__(self, ids):
        assert self.training
        self.calls += 1
        return np.float32(self.losses[self.calls - 1])


def test_evaluate_lm_totals_and_limits():
    b1 = np.full((2, 5), 7, np.int32)
    b2 = np.full((3, 5), 7, np.int32)
    b2[0, 1] = 0                                      # one pad among the inputs -> not counted
    net = _ConstLoss([1.0, 2.0])
    m = evaluate_lm(net, [b1, b2], n_bytes=100)
    assert m["tokens"] == 8 + 11 and m["batches"] == 2 and m["samples"] == 5
    assert m["total_nll_nats"] == pytest.approx(1.0 * 8 + 2.0 * 11)
    assert m["loss"] == pytest.approx(30 / 19)
    assert m["bits_per_byte"] == pytest.approx(30 / math.log(2) / 100)
    assert net.training is False                      # restored
    m1 = evaluate_lm(_ConstLoss([1.0, 2.0]), [b1, b2], max_batches=1, bytes_per_token=3.0)
    assert m1["tokens"] == 8 and m1["n_bytes"] == 24 and m1["bits_per_byte"] == pytest.approx(8 / math.log(2) / 24)


def test_write_eval_json_atomic(tmp_path):
    p = write_eval_json({"loss": np.float32(1.5), "tokens": np.int64(3)}, str(tmp_path / "out"))
    assert json.load(open(p)) == {"loss": 1.5, "tokens": 3}
    assert os.listdir(tmp_path / "out") == ["eval.json"]


def _tiny_llama(vocab, seq):
    import mindspore as ms
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
    ms.set_seed(0)
    cfg = LlamaConfig(batch_size=2, seq_length=seq, hidden_size=32, num_layers=1, num_heads=2,
                      vocab_size=vocab, intermediate_size=64, use_flash_attention=False,
                      fused_rms_norm=False, use_rope_slice=True, compute_dtype="float32",
                      layernorm_compute_type="float32", softmax_compute_type="float32",
                      rotary_dtype="float32", param_init_type="float32", pad_token_id=0)
    return LlamaForCausalLM(cfg)


@pytest.fixture
def graph_mode():
    import mindspore as ms
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    yield
    ms.set_context(mode=prev)


def test_evaluate_tiny_llama_graph_mode(small_dataset, graph_mode):
    import mindspore as ms
    from bitcpm_ms.data.dataset import build_dataset
    from bitcpm_ms.training.evaluation import evaluate_on_prepared
    out, man, cfg, docs = small_dataset
    net = _tiny_llama(man["vocab_size"], cfg.seq_length)
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    ds = build_dataset(str(out), batch_size=2, split="validation", shuffle=False)
    m = evaluate_lm(net, ds, max_batches=3, bytes_per_token=man["splits"]["validation"]["bytes_per_token"])
    assert ms.get_context("mode") == ms.GRAPH_MODE
    assert m["batches"] == 3 and m["tokens"] == 3 * 2 * cfg.seq_length
    # an untrained model is close to uniform over the vocabulary
    assert abs(m["loss"] - math.log(man["vocab_size"])) < 0.5
    assert m["bits_per_byte"] == pytest.approx(
        m["total_nll_nats"] / math.log(2) / (m["tokens"] * man["splits"]["validation"]["bytes_per_token"]))
    # reference: mean of the per-batch losses computed directly
    net.set_train(True)
    ref = [float(net(ms.Tensor(b[0])).asnumpy())
           for _, b in zip(range(3), ds.create_tuple_iterator(num_epochs=1, output_numpy=True))]
    assert m["loss"] == pytest.approx(np.mean(ref), rel=1e-5)
    assert all(np.array_equal(before[p.name], p.asnumpy()) for p in net.get_parameters())
    full = evaluate_on_prepared(net, str(out), batch_size=2)
    assert full["samples"] == man["splits"]["validation"]["samples"] // 2 * 2
    assert full["dataset_fingerprint"] == man["fingerprint"]


def test_evaluate_with_document_masking(small_dataset, graph_mode):
    """A network that masks documents gets each batch's actual_seq_len and counts only the labels
    inside a document (not a document's first token)."""
    import mindspore as ms
    from bitcpm_ms.data.dataset import build_dataset
    from bitcpm_ms.data.documents import crossing_labels
    from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
    from bitcpm_ms.training.evaluation import evaluate_on_prepared
    out, man, cfg, docs = small_dataset
    ms.set_seed(0)
    net = BitCPMForCausalLM(BitCPMConfig(batch_size=2, seq_length=cfg.seq_length, hidden_size=32, num_layers=1,
                                         num_heads=2, vocab_size=man["vocab_size"], intermediate_size=64,
                                         use_eod_attn_mask_compression=True, eos_token_id=2, pad_token_id=0))
    m = evaluate_on_prepared(net, str(out), batch_size=2, max_batches=3)
    ds = build_dataset(str(out), batch_size=2, split="validation", shuffle=False, documents=True)
    batches = [b for _, b in zip(range(3), ds.create_tuple_iterator(num_epochs=1, output_numpy=True))]
    kept = [int((~crossing_labels(e, ids[:, :-1], [2])).sum()) for ids, e in batches]
    assert m["tokens"] == sum(kept) < 3 * 2 * cfg.seq_length
    net.set_train(True)
    ref = [float(net(ms.Tensor(ids), actual_seq_len=ms.Tensor(e)).asnumpy()) for ids, e in batches]
    assert m["total_nll_nats"] == pytest.approx(sum(l * k for l, k in zip(ref, kept)), rel=1e-5)
    with pytest.raises(ValueError, match="need their actual_seq_len column"):
        evaluate_lm(net, [ids for ids, _ in batches])
