"""The distilling student: its loss against numpy, its frozen teacher, what its checkpoints hold."""
import numpy as np
import pytest
import mindspore as ms
from mindformers.core.optim import AdamW

from bitcpm_ms.training.checkpoint_loading import load_weights
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.training import BitCPMTrainOneStepCell
from bitcpm_ms.training.distill import BitCPMDistillForCausalLM, TEACHER_PREFIX, loss_terms, teacher_of
from bitcpm_ms.training.kd_loss import kd_loss_reference, log_softmax_np

STUDENT = dict(batch_size=2, seq_length=16, hidden_size=64, num_layers=1, num_heads=4, n_kv_heads=2,
               vocab_size=96, intermediate_size=96, dim_model_base=32)
TEACHER = dict(STUDENT, hidden_size=96, num_layers=2, intermediate_size=192)        # larger than the student


def _config(dims, qat):
    return BitCPMConfig(**dims, scale_emb=12, scale_depth=1.4, qat_config={"group_size": 32} if qat else None)


def _teacher(seed=0, **dims):
    """A random teacher with peaked output distributions (head x 30), so KD is of order 1."""
    ms.set_seed(seed)
    net = BitCPMForCausalLM(_config(dict(TEACHER, **dims), qat=False))
    net.lm_head.weight.set_data(ms.Tensor(net.lm_head.weight.asnumpy() * 30.0))
    return net


def _student(teacher, temperature, alpha, seed=1):
    ms.set_seed(seed)
    return BitCPMDistillForCausalLM(_config(STUDENT, qat=True), teacher, temperature, alpha)


@pytest.fixture
def pynative():
    """Forward-only numerics run op by op (no graph compile); training tests stay in graph mode."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(scope="module")
def teacher():
    return _teacher()


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(3, 96, (2, 17)).astype(np.int32)     # no pad id: all tokens count


def _eval_logits(net, tokens):
    net.set_train(False)
    out = net(ms.Tensor(tokens))[0].asnumpy()
    return out.reshape(-1, out.shape[-1]).astype(np.float64)


def test_alpha_zero_is_the_plain_qat_loss(ids, teacher, pynative):
    plain = BitCPMForCausalLM(_config(STUDENT, qat=True))
    net = _student(teacher, temperature=1.0, alpha=0.0)
    ms.load_param_into_net(net, {p.name: p for p in plain.get_parameters()}, strict_load=True)
    plain.set_train(True)
    net.set_train(True)
    assert float(net(ms.Tensor(ids)).asnumpy()) == float(plain(ms.Tensor(ids)).asnumpy())
    assert loss_terms(net) == {}                        # nothing extra to log


def test_loss_is_the_ce_kd_mix_of_the_numpy_reference(ids, teacher, pynative):
    temperature, alpha = 2.0, 0.3
    net = _student(teacher, temperature, alpha)
    tokens, labels = ids[:, :-1], ids[:, 1:].reshape(-1)
    s, t = _eval_logits(net, tokens), _eval_logits(teacher, tokens)
    ce = float(-log_softmax_np(s)[np.arange(len(labels)), labels].mean())
    kd = kd_loss_reference(s, t, temperature=temperature)
    net.set_train(True)
    total, _ = ms.value_and_grad(net, None, net.trainable_params())(ms.Tensor(ids))
    assert float(total.asnumpy()) == pytest.approx((1 - alpha) * ce + alpha * kd, rel=1e-4)
    assert kd > 0.1                          # a real KL term, not float noise around 0
    terms = loss_terms(net)                  # recorded by the backward of the step
    assert terms["ce_loss"] == pytest.approx(ce, rel=1e-4)
    assert terms["kd_loss"] == pytest.approx(kd, rel=1e-4)


def test_teacher_is_frozen_outside_the_optimizer_and_the_checkpoint(ids, teacher, tmp_path):
    net = _student(teacher, temperature=2.0, alpha=0.5)
    before = {p.name: p.asnumpy().copy() for p in teacher.get_parameters()}
    student_before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    assert all(name.startswith(TEACHER_PREFIX) for name in before)
    assert not any(p.requires_grad for p in teacher.get_parameters())
    assert not any(p.name.startswith(TEACHER_PREFIX) for p in net.get_parameters())
    opt = AdamW(net.trainable_params(), learning_rate=1e-2)
    step = BitCPMTrainOneStepCell(net, opt)
    step.set_train(True)
    losses = [float(step(ms.Tensor(ids))[0].asnumpy()) for _ in range(4)]
    assert losses[-1] < losses[0]
    for p in teacher.get_parameters():
        assert np.array_equal(p.asnumpy(), before[p.name]), p.name        # bit-identical
    moved = [n for n, p in ((p.name, p) for p in net.get_parameters()) if not np.array_equal(p.asnumpy(),
                                                                                          student_before[n])]
    assert len(moved) >= 8
    assert teacher_of(step) is teacher
    # the optimizer and the saved checkpoint know only the student
    assert not any(TEACHER_PREFIX in p.name for p in opt.parameters)
    path = str(tmp_path / "student.ckpt")
    ms.save_checkpoint(step, path)
    saved = ms.load_checkpoint(path)
    assert not any(TEACHER_PREFIX in name or name.startswith("distill.") for name in saved)
    plain = BitCPMForCausalLM(_config(STUDENT, qat=True))
    assert load_weights(plain, path) == []


def test_teacher_with_another_vocabulary_is_refused():
    with pytest.raises(ValueError, match="teacher vocab_size 100 != student vocab_size 96"):
        _student(_teacher(vocab_size=100, num_layers=1), temperature=1.0, alpha=0.5)


def test_packed_documents_the_teacher_reads_the_same_documents(pynative):
    """With document masking both models run on the row's documents; CE and KD skip the labels that
    start another document (data/documents.py), and equal the numpy mix of the packed logits."""
    from bitcpm_ms.data.documents import crossing_labels, rows_actual_seq_len
    docs = dict(use_eod_attn_mask_compression=True, eos_token_id=2)
    teacher = _teacher(**docs)
    temperature, alpha = 2.0, 0.3
    ms.set_seed(1)
    net = BitCPMDistillForCausalLM(_config(dict(STUDENT, **docs), qat=True), teacher, temperature, alpha)
    ids = np.random.default_rng(5).integers(3, 96, (2, 17)).astype(np.int32)
    ids[0, [3, 10]] = 2
    ids[1, 15] = 2                                        # boundary at the last position
    ends = rows_actual_seq_len(ids, 2, 4)
    tokens, labels = ids[:, :-1], ids[:, 1:].reshape(-1)
    keep = (~crossing_labels(ends, tokens, [2])).reshape(-1)

    def packed_logits(model):
        model.set_train(False)
        out = model(ms.Tensor(tokens), actual_seq_len=ms.Tensor(ends))[0].asnumpy()
        return out.reshape(-1, out.shape[-1]).astype(np.float64)

    s, t = packed_logits(net), packed_logits(teacher)
    assert np.abs(t - _eval_logits(teacher, tokens)).max() > 1e-3      # the documents change the teacher
    ce = float(-(log_softmax_np(s)[np.arange(len(labels)), labels] * keep).sum() / keep.sum())
    kd = kd_loss_reference(s, t, mask=keep, temperature=temperature)
    net.set_train(True)
    total = float(net(ms.Tensor(ids), actual_seq_len=ms.Tensor(ends)).asnumpy())
    assert total == pytest.approx((1 - alpha) * ce + alpha * kd, rel=1e-4)
    with pytest.raises(ValueError, match="both mask documents"):
        BitCPMDistillForCausalLM(_config(dict(STUDENT, **docs), qat=True), _teacher(num_layers=1), 1.0, 0.5)
