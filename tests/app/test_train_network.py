"""init_from_checkpoint, require_init_checkpoint and the distill: section: their checks and errors."""
import json

import numpy as np
import pytest
import mindspore as ms

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.train import train
from bitcpm_ms.app.train_network import build_train_network, check_init_policy
from bitcpm_ms.errors import CheckpointError, ConfigError
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.training.distill import BitCPMDistillForCausalLM

from ..helpers import TINY_YAML

MODEL = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "n_kv_heads": 1, "intermediate_size": 128,
         "dim_model_base": 32, "vocab_size": 512, "seq_length": 32, "batch_size": 2}
SMALL = {f"model.model_config.{k}": v for k, v in MODEL.items()}
SMALL.update({"runner_config.batch_size": 2, "train_dataset.batch_size": 2, "quant.group_size": 32})


def _save_model(path, **dims):
    """A full-precision model checkpoint (what an fp run or run/convert_hf.py from_hf gives)."""
    ms.set_seed(0)
    net = BitCPMForCausalLM(BitCPMConfig(**dict(MODEL, **dims), scale_emb=12, scale_depth=1.4))
    ms.save_checkpoint(net, str(path))
    return net


@pytest.fixture(scope="module")
def fp_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp") / "fp.ckpt"
    net = _save_model(path)
    return str(path), {p.name: p.asnumpy() for p in net.get_parameters()}


def test_new_keys_exist_in_every_config_with_defaults():
    cfg = load_config(TINY_YAML)
    assert cfg.init_from_checkpoint == "" and cfg.require_init_checkpoint is False
    assert cfg.allow_random_init is False and cfg.distill is None
    assert build_train_network(cfg) is None             # plain configs: the Trainer builds the model


@pytest.mark.parametrize("overrides, match", [
    ({"require_init_checkpoint": "yes"}, "require_init_checkpoint must be true or false"),
    ({"init_from_checkpoint": 3}, "init_from_checkpoint must be a checkpoint path"),
    ({"distill.temperature": 2.0}, "teacher_checkpoint is empty"),
    ({"distill.teacher_checkpoint": "x.ckpt"}, "exactly one of teacher_config"),
    ({"distill.teacher_checkpoint": "x", "distill.teacher_config": "y", "distill.alpha": 1.5}, "alpha"),
    ({"distill.teacher_checkpoint": "x", "distill.teacher_config": "y", "distill.temperature": 0}, "temperature"),
    ({"distill.teachr_checkpoint": "x"}, "unknown key"),
])
def test_bad_keys_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY_YAML, overrides)


def test_require_init_checkpoint_refuses_random_qat_unless_allowed(fp_ckpt, tmp_path):
    cfg = load_config(TINY_YAML, {"require_init_checkpoint": True, "output_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="--init_from_checkpoint PATH .* --allow_random_init true"):
        check_init_policy(cfg)
    with pytest.raises(ConfigError, match="require_init_checkpoint"):       # training refuses before writing
        train(cfg)
    assert not (tmp_path / "run").exists()
    for ok in ({"allow_random_init": True}, {"init_from_checkpoint": fp_ckpt[0]},
               {"quant.enabled": False}):                                     # fp: no rule
        check_init_policy(load_config(TINY_YAML, {"require_init_checkpoint": True, **ok}))


def test_init_loads_every_weight_and_nothing_else(fp_ckpt):
    path, weights = fp_ckpt
    net = build_train_network(load_config(TINY_YAML, dict(SMALL, init_from_checkpoint=path)))
    assert type(net) is BitCPMForCausalLM and net.config.qat_config["enabled"]
    got = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert sorted(got) == sorted(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_init_checkpoint_of_another_model_names_the_parameter(tmp_path):
    _save_model(tmp_path / "wide.ckpt", intermediate_size=192)
    with pytest.raises(CheckpointError, match=r"feed_forward\.w[123]\.weight has shape \((192, 64|64, 192)\)"):
        build_train_network(load_config(TINY_YAML, dict(SMALL, init_from_checkpoint=str(tmp_path / "wide.ckpt"))))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_train_network(load_config(TINY_YAML, dict(SMALL, init_from_checkpoint=str(tmp_path / "none"))))


def _teacher_config(path, **dims):
    path.write_text(json.dumps({"model": {"model_config": dict(MODEL, scale_emb=12, scale_depth=1.4, **dims)}}))
    return str(path)


def test_distill_builds_a_frozen_teacher_from_a_run_config(fp_ckpt, tmp_path):
    tcfg = _teacher_config(tmp_path / "teacher.json")
    cfg = load_config(TINY_YAML, dict(SMALL, **{"distill.teacher_config": tcfg, "distill.teacher_checkpoint": fp_ckpt[0],
                                               "distill.temperature": 2.0, "distill.alpha": 0.25}))
    net = build_train_network(cfg)
    assert isinstance(net, BitCPMDistillForCausalLM) and net.temperature == 2.0 and net.alpha == 0.25
    teacher = {p.name: p.asnumpy() for p in net.teacher.get_parameters()}
    for name, value in fp_ckpt[1].items():
        np.testing.assert_array_equal(teacher["teacher." + name], value)
    assert not any(p.requires_grad for p in net.teacher.get_parameters())


def test_teacher_with_another_vocabulary_or_checkpoint_is_refused_by_name(fp_ckpt, tmp_path):
    base = dict(SMALL, **{"distill.teacher_checkpoint": fp_ckpt[0]})
    other_vocab = _teacher_config(tmp_path / "t8000.json", **{"vocab_size": 8000})
    with pytest.raises(ConfigError, match=r"teacher .*t8000\.json has vocab_size 8000, the student 512"):
        build_train_network(load_config(TINY_YAML, dict(base, **{"distill.teacher_config": other_vocab})))
    wider = _teacher_config(tmp_path / "wide.json", hidden_size=128)
    with pytest.raises(CheckpointError, match=r"distill teacher: .*model\..* has shape .*\(.*64.*\), the model "
                                              r"expects .*128"):
        build_train_network(load_config(TINY_YAML, dict(base, **{"distill.teacher_config": wider})))
    (tmp_path / "tok_a").write_bytes(b"a")
    (tmp_path / "tok_b").write_bytes(b"b")
    tok = tmp_path / "tok.json"
    tok.write_text(json.dumps({"model": {"model_config": dict(MODEL)},
                               "processor": {"tokenizer": {"vocab_file": str(tmp_path / "tok_b")}}}))
    with pytest.raises(ConfigError, match="uses tokenizer .*tok_b, the student .*tok_a"):
        build_train_network(load_config(TINY_YAML, dict(base, **{
            "distill.teacher_config": str(tok), "processor.tokenizer.vocab_file": str(tmp_path / "tok_a")})))
