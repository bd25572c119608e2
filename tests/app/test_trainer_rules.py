"""trainer_rules: the Trainer's gradient-accumulation and lazy-inline decisions, taken before the
Trainer runs, must be the ones MindFormers' own code takes (compared with it directly)."""
import copy
from types import SimpleNamespace

import pytest
import mindspore as ms
from mindformers.tools.register import MindFormerConfig
from mindformers.trainer.base_trainer import BaseTrainer

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.train_network import build_train_network
from bitcpm_ms.app.trainer_rules import (apply_lazy_inline_rule, effective_gradient_accumulation,
                                         lazy_inline_disabled)
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM

from ..helpers import TINY_YAML


def _mindformers_decision(cfg):
    """Run MindFormers' BaseTrainer._check_grad_accumulation_steps on a copy of the config."""
    holder = SimpleNamespace(config=copy.deepcopy(cfg), get_pipeline_stages=BaseTrainer.get_pipeline_stages)
    BaseTrainer._check_grad_accumulation_steps(holder)      # pylint: disable=protected-access
    return (holder.config.runner_config.gradient_accumulation_steps,
            bool(holder.config.model.model_config.get("disable_lazy_inline", False)))


@pytest.mark.parametrize("mode", ["stand_alone", "data_parallel", "semi_auto_parallel", "auto_parallel"])
@pytest.mark.parametrize("pp", [1, 2])
@pytest.mark.parametrize("ga", [None, 1, 4])
def test_rules_equal_mindformers_own(parallel_context, mode, pp, ga):
    parallel_context(parallel_mode=mode, pipeline_stages=pp)
    cfg = MindFormerConfig(runner_config={"gradient_accumulation_steps": ga}, model={"model_config": {}})
    steps, disabled = _mindformers_decision(cfg)
    assert effective_gradient_accumulation(cfg) == steps
    assert lazy_inline_disabled(cfg) == disabled
    assert apply_lazy_inline_rule(cfg) == disabled
    assert disabled == (pp == 1 and (ga in (None, 1) or mode not in ("semi_auto_parallel", "auto_parallel")))


def test_a_yaml_that_disables_lazy_inline_keeps_it_disabled(parallel_context):
    parallel_context(parallel_mode="semi_auto_parallel", pipeline_stages=2)
    cfg = MindFormerConfig(runner_config={"gradient_accumulation_steps": 1},
                           model={"model_config": {"disable_lazy_inline": True}})
    assert not lazy_inline_disabled(cfg) and apply_lazy_inline_rule(cfg)


def _lazy_inline_on(net) -> bool:
    """MindSpore's lazy_inline marks the instance it decorates (mindspore/graph/lazy_inline.py)."""
    return str(getattr(net, "cell_init_args", "")).startswith("lazy_inline_")


def test_init_checkpoint_network_is_built_without_lazy_inline_in_data_parallel(parallel_context, tmp_path):
    """The network built for --init_from_checkpoint in data parallel: MindFormers' rule turns lazy
    inline off (it was on before: the CPU compile failed with 'Input[0] must be a Primitive ValueNode')."""
    dims = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "n_kv_heads": 1, "intermediate_size": 128,
            "dim_model_base": 32, "vocab_size": 512, "seq_length": 32, "batch_size": 2}
    ckpt = tmp_path / "fp.ckpt"
    ms.save_checkpoint(BitCPMForCausalLM(BitCPMConfig(**dims, scale_emb=12, scale_depth=1.4)), str(ckpt))
    overrides = {f"model.model_config.{k}": v for k, v in dims.items()}
    overrides.update({"runner_config.batch_size": 2, "train_dataset.batch_size": 2, "quant.group_size": 32,
                      "init_from_checkpoint": str(ckpt)})
    parallel_context(parallel_mode="data_parallel")
    probe = BitCPMForCausalLM(BitCPMConfig(**dims))             # MindFormers' decorator: on in data parallel
    assert _lazy_inline_on(probe)
    net = build_train_network(load_config(TINY_YAML, overrides))
    assert type(net) is BitCPMForCausalLM and not _lazy_inline_on(net)
    assert net.config.disable_lazy_inline is True
