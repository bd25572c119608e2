"""Every key of every shipped YAML is read by MindFormers 1.9 / MindSpore 2.9 or by bitcpm-ms
(`tests/configs/yaml_keys.py`), and the production YAMLs pass MindFormers' own config checks."""
import glob
import os

import pytest
from mindformers.core.context.validators import execute_validator
from mindformers.tools.register import MindFormerConfig

from bitcpm_ms.app.config import load_config
from tests.configs.yaml_keys import BITCPM_TOP_LEVEL_KEYS, ignored_keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# run configs (recipe YAMLs list stages of run configs; app/recipe.check_recipe validates them)
ALL_YAMLS = sorted(p for p in glob.glob(os.path.join(ROOT, "yaml_configs", "*.yaml"))
                   if not os.path.basename(p).startswith("recipe_"))
PRODUCTION = [p for p in ALL_YAMLS if p.endswith("_910b.yaml")]


@pytest.mark.parametrize("path", ALL_YAMLS, ids=os.path.basename)
def test_no_key_is_ignored(path):
    assert ignored_keys(load_config(path)) == []


@pytest.mark.parametrize("path", PRODUCTION, ids=os.path.basename)
def test_mindformers_own_checks_accept_the_production_yamls(path):
    cfg = MindFormerConfig(path)              # applies MindFormers' template (KeyError on unknown keys)
    execute_validator(cfg)                    # build_context's validators (run_mode, mode, parallel_mode, ...)
    assert cfg.parallel.parallel_mode == "semi_auto_parallel"     # validated and mapped by MindFormers
    # our own top-level keys are the only ones MindFormers' template does not know
    from tests.configs.yaml_keys import top_level_keys_read_by_mindformers
    assert set(cfg) - top_level_keys_read_by_mindformers() <= set(BITCPM_TOP_LEVEL_KEYS)


def test_typos_and_unread_keys_are_listed():
    cfg = load_config(PRODUCTION[0])
    cfg.load_checkpont = ""
    cfg.parallel_config.micro_batch_nums = 3
    cfg.parallel.strategy_ckpt_config.save_fle = "x"
    cfg.context.max_device_mem = "1GB"
    cfg.model.model_config.use_attn_mask_compresion = True
    cfg.optimizer.beta = 0.9
    cfg.runner_wrapper.max_grad = 1
    cfg.callbacks[-1]["keep_checkpoints"] = 3
    cfg.train_dataset.shufle = True
    cfg.train_dataset.data_loader.shufle = True
    assert sorted(ignored_keys(cfg)) == sorted([
        "<top>.load_checkpont", "parallel_config.micro_batch_nums", "parallel.strategy_ckpt_config.save_fle",
        "context.max_device_mem", "model.model_config.use_attn_mask_compresion", "optimizer.beta",
        "runner_wrapper.max_grad", f"callbacks.{len(cfg.callbacks) - 1}.keep_checkpoints", "train_dataset.shufle",
        "train_dataset.data_loader.shufle"])
