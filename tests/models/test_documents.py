"""Packed documents in the model (use_eod_attn_mask_compression + actual_seq_len, models/documents.py):
each document of a packed row gives the logits, loss and gradients of that document run alone, on
MindSpore's op chains and on the fused CPU ops, with ternary QAT and LongRoPE; boundaries at
position 1 and at the last position."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from bitcpm_ms.data.documents import crossing_labels, rows_actual_seq_len
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM

S, V, EOS = 16, 96, 2
DIMS = dict(batch_size=2, seq_length=S, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=V,
            intermediate_size=96, scale_emb=12, scale_depth=1.4, dim_model_base=32, eos_token_id=EOS,
            pad_token_id=0, max_position_embedding=S, use_eod_attn_mask_compression=True)
LONGROPE = {"rope_type": "longrope", "short_factor": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 9.0],
            "long_factor": [1.0] * 8, "original_max_position_embeddings": S}
# EOS among the inputs of row 0 at positions 0 (a document of one token, the next starts at
# position 1) and 9; of row 1 at 6 and 15 (the last position: its label starts the next document)
EOS_AT = [(0, 9), (6, 15)]


def packed_rows(seed=0):
    ids = np.random.default_rng(seed).integers(3, V, (2, S + 1)).astype(np.int32)
    for b, where in enumerate(EOS_AT):
        ids[b, list(where)] = EOS
    return ids, rows_actual_seq_len(ids, EOS, 6)


class WeightedNLL(nn.Cell):
    """sum(nll * weights) of the model's eval-mode logits; with `packed`, of the packed forward."""

    def __init__(self, net, packed):
        super().__init__()
        self.net, self.packed = net, packed

    def construct(self, ids, labels, weights, ends):
        logits = self.net(ids, actual_seq_len=ends)[0] if self.packed else self.net(ids)[0]
        logp = ops.log_softmax(logits, -1)                                        # [B, S, V]
        nll = -ops.gather_elements(logp, 2, ops.expand_dims(labels, -1)).squeeze(-1)
        return (nll * weights).sum()


class Grads:
    """Loss and parameter gradients of WeightedNLL (cells built once: one compile per input shape)."""

    def __init__(self, net, packed):
        self.cell = WeightedNLL(net, packed)
        self.fn = ops.GradOperation(get_by_list=True)(self.cell, ms.ParameterTuple(net.trainable_params()))

    def __call__(self, ids, labels, weights, ends):
        args = [ms.Tensor(a) for a in (ids, labels, weights, ends)]
        return [g.asnumpy() for g in self.fn(*args)], float(self.cell(*args).asnumpy())


@pytest.fixture(scope="module", params=["op_chains", "fused_longrope"])
def model(request):
    ms.set_seed(1)
    fused = request.param != "op_chains"
    cfg = BitCPMConfig(**DIMS, qat_config={"group_size": 32}, cpu_fused_ops=fused,
                       rope_scaling=LONGROPE if request.param == "fused_longrope" else None)
    net = BitCPMForCausalLM(cfg)
    assert net.document_mask and net.documents is not None
    assert type(net.model.layers[0].attention).__name__ == ("FusedLlamaAttention" if fused else "LLamaAttention")
    return net


def test_each_document_equals_the_document_run_alone(model):
    ids, ends = packed_rows()
    tokens, labels = ids[:, :S], ids[:, 1:]
    keep = ~crossing_labels(ends, tokens, [EOS])
    model.set_train(False)
    packed_logits = model(ms.Tensor(tokens), actual_seq_len=ms.Tensor(ends))[0].asnumpy()
    grads_packed, grads_alone = Grads(model, True), Grads(model, False)
    n_docs = 0
    for b in range(2):
        bounds = [0] + [int(e) for e in ends[b] if e < S] + [S]
        for s, e in zip(bounds[:-1], bounds[1:]):
            n = e - s
            alone = np.zeros((1, S), np.int32)                     # the document alone, pads after it
            alone[0, :n] = tokens[b, s:e]
            alone_labels = np.zeros((1, S), np.int32)
            alone_labels[0, :n] = labels[b, s:e]
            logits = model(ms.Tensor(alone))[0].asnumpy()
            np.testing.assert_allclose(packed_logits[b, s:e], logits[0, :n], rtol=2e-5, atol=2e-5)
            # loss and gradients of this document: its kept labels, from the packed row and alone
            w = np.zeros((2, S), np.float32)
            w[b, s:e] = keep[b, s:e] / max(keep[b, s:e].sum(), 1)
            w1 = np.zeros((1, S), np.float32)
            w1[0, :n] = w[b, s:e]
            g_packed, l_packed = grads_packed(tokens, labels, w, ends)
            g_alone, l_alone = grads_alone(alone, alone_labels, w1, ends[:1])
            assert abs(l_packed - l_alone) <= 2e-5 * max(1.0, abs(l_alone)), (b, s, e)
            for gp, ga in zip(g_packed, g_alone):
                scale = max(np.abs(ga).max(), 1e-6)
                assert np.abs(gp - ga).max() <= 1e-4 * scale, (b, s, e)
            n_docs += 1
    assert n_docs == 5 and not keep[0, 0] and not keep[1, S - 1] and keep[0, 1]


def test_training_loss_is_the_mean_over_kept_labels(model):
    ids, ends = packed_rows(seed=3)
    tokens, labels = ids[:, :S], ids[:, 1:]
    keep = ~crossing_labels(ends, tokens, [EOS])
    model.set_train(False)
    logits = model(ms.Tensor(tokens), actual_seq_len=ms.Tensor(ends))[0].asnumpy().astype(np.float64)
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    model.set_train(True)
    loss = float(model(ms.Tensor(ids), actual_seq_len=ms.Tensor(ends)).asnumpy())
    assert abs(loss - (nll * keep).sum() / keep.sum()) < 2e-5 * loss
    model.set_train(False)
    # the same row as one document reads across the boundaries: other logits after the first one
    one = model(ms.Tensor(tokens), actual_seq_len=ms.Tensor(np.full_like(ends, S)))[0].asnumpy()
    assert np.abs(one[0, 1:] - logits[0, 1:]).max() > 1e-3 and np.allclose(one[0, :1], logits[0, :1], atol=1e-5)


def test_training_without_actual_seq_len_is_refused_and_the_switch_off_is_plain_llama(model):
    ids, _ = packed_rows()
    model.set_train(True)
    with pytest.raises(ValueError, match="no actual_seq_len was given"):
        model(ms.Tensor(ids))
    model.set_train(False)


def test_switch_off_builds_nothing_new():
    ms.set_seed(1)
    off = BitCPMForCausalLM(BitCPMConfig(**{**DIMS, "use_eod_attn_mask_compression": False}))
    assert off.documents is None and not off.document_mask
    cfg = BitCPMConfig(**DIMS)
    assert cfg.use_eod_attn_mask_compression is True          # the user's value, on CPU too


def test_layout_cell_follows_the_numpy_spec():
    """DocumentLayout against data/documents.py and fused/reference.py: positions, keep, mask; and the
    TND ends (offsets restarting at every data-parallel shard of the batch)."""
    from bitcpm_ms.data.documents import position_ids
    from bitcpm_ms.fused.reference import document_mask
    from bitcpm_ms.models.documents import DocumentLayout
    ids = np.random.default_rng(4).integers(3, V, (4, S + 1)).astype(np.int32)
    for b, where in enumerate([(0,), (15,), (3, 4, 5), ()]):
        ids[b, list(where)] = EOS
    ids[3, 7] = 0                                                    # a pad key
    ends = rows_actual_seq_len(ids, EOS, 5)
    tokens = ids[:, :S]
    table = np.arange(S * 8, dtype=np.float32).reshape(S, 8)           # row p holds p*8 .. p*8+7
    (cos, sin), mask, flat, keep = DocumentLayout(S, 8, (EOS,), 0)(ms.Tensor(tokens), ms.Tensor(ends),
                                                                    ms.Tensor(table), ms.Tensor(-table))
    pos = position_ids(ends, S)
    np.testing.assert_array_equal(cos.asnumpy()[:, 0, :, 0], pos * 8)
    np.testing.assert_array_equal(sin.asnumpy()[:, 0, :, 0], -pos * 8)
    np.testing.assert_array_equal(keep.asnumpy(), ~crossing_labels(ends, tokens, [EOS]))
    np.testing.assert_array_equal(mask.asnumpy(), document_mask(tokens, ends))
    assert flat is None
    _, none, flat, _ = DocumentLayout(S, 8, (EOS,), 0, tnd=True, data_parallel=2)(
        ms.Tensor(tokens), ms.Tensor(ends), ms.Tensor(table), ms.Tensor(table))
    assert none is None
    np.testing.assert_array_equal(flat.asnumpy(), (ends + np.array([[0], [S], [0], [S]])).reshape(-1))


def test_flash_attention_config_builds_the_tnd_path():
    """With flash attention (Ascend; built here, not run: no flash attention kernel on CPU) the
    layers are MindFormers' TND flash attention reading actual_seq_qlen / kvlen."""
    cfg = BitCPMConfig(**{**DIMS, "seq_length": 2048, "max_position_embedding": 2048}, cpu_safe=False,
                       use_flash_attention=True)
    net = BitCPMForCausalLM(cfg)
    attention = net.model.layers[0].attention
    assert attention.input_layout == "TND" and attention.sparse_mode == 8
    assert attention.flash_attention.use_actual_seqlen and net.documents.tnd
    assert net.model.casual_mask.use_attn_mask_compression          # the compressed 2048 x 2048 mask
    assert cfg.use_eod_attn_mask_compression is True
