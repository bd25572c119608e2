"""The per-parameter .ckpt reader against MindSpore's own reader, its memory, and `load_weights` on it."""
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
import mindspore.train.serialization as serialization
from mindspore import Tensor

from bitcpm_ms.training.checkpoint_loading import load_weights
from bitcpm_ms.errors import CheckpointError
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.testing import REPO
from bitcpm_ms.training import checkpoint_reader as reader

MODEL = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "n_kv_heads": 1, "intermediate_size": 128,
         "dim_model_base": 32, "vocab_size": 512, "seq_length": 32, "batch_size": 2, "scale_emb": 12,
         "scale_depth": 1.4}


def _params():
    rng = np.random.default_rng(0)
    return [{"name": "w32", "data": Tensor(rng.standard_normal((64, 48)).astype(np.float32))},
            {"name": "w16", "data": Tensor(rng.standard_normal((33, 7)).astype(np.float16))},
            {"name": "wbf", "data": Tensor(rng.standard_normal((40, 40)).astype(np.float32), ms.bfloat16)},
            {"name": "i32", "data": Tensor(np.arange(5, dtype=np.int32))},
            {"name": "scalar", "data": Tensor(7, ms.int64)},
            {"name": "flags", "data": Tensor(np.array([True, False]))}]


def _numpy(value):
    return value.float().asnumpy() if value.dtype == ms.bfloat16 else value.asnumpy()


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("slice_kib", [512 * 1024, 1])        # 1 KiB: every larger tensor in several records
def test_same_parameters_as_mindspores_reader(tmp_path, monkeypatch, crc, slice_kib):
    monkeypatch.setattr(serialization, "SLICE_SIZE", slice_kib)
    path = str(tmp_path / "x.ckpt")
    ms.save_checkpoint(_params(), path, append_dict={"epoch_num": 3, "note": "hello", "lr": 0.5}, crc_check=crc)
    ref, got = ms.load_checkpoint(path), reader.load(path)
    assert list(got) == list(ref)
    for name, want in ref.items():
        if isinstance(want, str):
            assert got[name] == want
            continue
        assert (got[name].dtype, got[name].shape) == (want.dtype, want.shape), name
        np.testing.assert_array_equal(_numpy(got[name]), _numpy(want), err_msg=name)
    if slice_kib == 1:
        assert len(reader.index(path)["w32"].spans) > 1          # the multi-record case was exercised


def test_only_chosen_parameters_are_returned(tmp_path):
    path = str(tmp_path / "x.ckpt")
    ms.save_checkpoint(_params(), path)
    assert sorted(reader.load(path, lambda n: n.startswith("w"))) == ["w16", "w32", "wbf"]


def test_truncated_and_foreign_files(tmp_path):
    path = str(tmp_path / "x.ckpt")
    ms.save_checkpoint(_params(), path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"x\.ckpt .*not a complete MindSpore checkpoint"):
        reader.load(path)
    with open(path, "wb") as f:
        f.write(b"\x00garbage, not a checkpoint")
    with pytest.raises(reader.UnsupportedCheckpoint):
        reader.index(path)


_MEMORY = r"""
import sys
import numpy as np, mindspore as ms
from mindspore import Tensor
from bitcpm_ms.training import checkpoint_reader as reader
mode, path = sys.argv[1], sys.argv[2]
if mode == "make":
    rng = np.random.default_rng(0)
    ms.save_checkpoint([{"name": f"{kind}.w{i}", "data": Tensor(rng.standard_normal((1024, 1024), dtype=np.float32))}
                        for kind in ("model", "adam_m", "adam_v") for i in range(16)], path)
    sys.exit()
# VmHWM: this process's own peak (ru_maxrss would carry over the parent's peak across fork + exec)
hwm = lambda: next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
before = hwm()
weights = lambda name: name.startswith("model.")
got = reader.load(path, weights) if mode == "ours" else ms.load_checkpoint(path, choice_func=weights)
print((hwm() - before) / 1024)
"""


def test_memory_is_what_is_loaded_not_the_file(tmp_path):
    """Weights (64 MiB) out of a training checkpoint with Adam moments (192 MiB): the reader's peak
    grows by the weights; MindSpore's, with the same choice_func, by twice the file."""
    path = str(tmp_path / "train.ckpt")
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_v="3")

    def peak(mode):
        out = subprocess.run([sys.executable, "-c", _MEMORY, mode, path], env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout
        return float(out.split()[-1]) if mode != "make" else None

    peak("make")
    ours, theirs = peak("ours"), peak("mindspore")
    assert ours < 64 * 1.25, ours
    assert theirs > 192 * 1.8, theirs


@pytest.fixture()
def net():
    ms.set_seed(1)
    return BitCPMForCausalLM(BitCPMConfig(**MODEL))


def _training_checkpoint(path, seed=0):
    """Weights plus Adam-like moments, as a training run's checkpoint holds them."""
    ms.set_seed(seed)
    src = BitCPMForCausalLM(BitCPMConfig(**MODEL))
    weights = {p.name: p.asnumpy() for p in src.get_parameters()}
    extra = [{"name": f"adam_m.{n}", "data": Tensor(np.ones_like(v))} for n, v in weights.items()]
    ms.save_checkpoint([{"name": n, "data": Tensor(v)} for n, v in weights.items()] + extra, str(path),
                       append_dict={"global_step": 12})
    return weights


def test_load_weights_equals_the_file_and_skips_optimizer_state(tmp_path, net):
    weights = _training_checkpoint(tmp_path / "t.ckpt")
    assert load_weights(net, str(tmp_path / "t.ckpt")) == []
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), weights[p.name], err_msg=p.name)


@pytest.mark.parametrize("change, match", [
    (lambda w: w.pop("model.norm_out.weight"), "lacks 1 model parameter"),
    (lambda w: w.update({"lm_head.weight": np.zeros((3, 64), np.float32)}), r"lm_head.weight has shape \(3, 64\)"),
    (lambda w: w.update({"lm_head.weight": w["lm_head.weight"].astype(np.float16)}), "lm_head.weight is Float16"),
])
def test_a_wrong_file_is_refused_before_any_weight_changes(tmp_path, net, change, match):
    weights = _training_checkpoint(tmp_path / "t.ckpt")
    change(weights)
    ms.save_checkpoint([{"name": n, "data": Tensor(v)} for n, v in weights.items()], str(tmp_path / "bad.ckpt"))
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    with pytest.raises(CheckpointError, match=match):
        load_weights(net, str(tmp_path / "bad.ckpt"))
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])
