"""Load a MindFormers-style YAML, apply dotted command-line overrides, validate our sections.

`--a.b.c value` overrides (parsed by `overrides.py`) work like MindFormers' run_mindformer.py. An
override whose top-level section does not exist in the file is an error (a typo would otherwise
be silently ignored).
"""
import json
import os
from typing import Dict

import yaml
from mindformers.tools.register import MindFormerConfig

from ..errors import ConfigError
from ..parallel import check_tp_divisibility
from ..quant import QuantConfig
from .train_network import add_default_keys, check_keys
from .preflight import check_config_values

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _list_index(items: list, part: str, key: str, where: str) -> int:
    """A list element by position ('1') or by its `type` ('BitCPMMetricsMonitor')."""
    if part.isdigit() and int(part) < len(items):
        return int(part)
    matches = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("type") == part]
    if len(matches) == 1:
        return matches[0]
    types = [item.get("type") for item in items if isinstance(item, dict)]
    raise ConfigError(f"override --{key}: {where} is a list of {len(items)} items {types}; "
                      f"{part!r} is neither an index nor the type of exactly one item")


def apply_overrides(config: MindFormerConfig, overrides: Dict[str, object]) -> None:
    """Set each dotted key. In lists, a part selects an item by index or by its `type`
    (`--callbacks.BitCPMMetricsMonitor.log_interval 5`)."""
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in config:
            raise ConfigError(f"override --{key}: the config has no top-level section {parts[0]!r} "
                              f"(sections: {sorted(config.keys())})")
        node = config
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            where = ".".join(parts[:j]) or "<root>"
            if isinstance(node, list):
                part = _list_index(node, part, key, where)
            elif not isinstance(node, dict):
                raise ConfigError(f"override --{key}: {where} is a value, not a section")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and (part not in node or node[part] is None):
                    node[part] = MindFormerConfig()
                node = node[part]


def load_config(path: str, overrides: Dict[str, object] = None) -> MindFormerConfig:
    """Read the YAML, apply overrides, validate the quant section and copy it into the model config."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    # `auto_register: bitcpm_register.X` (kept for run_mindformer.py) resolves under REGISTER_PATH
    os.environ.setdefault("REGISTER_PATH", REPO_ROOT)
    try:
        if path.endswith(".json"):      # a run's config_resolved.json: json, not YAML 1.1 (which reads 1e-05 as text)
            with open(path, encoding="utf-8") as f:
                config = MindFormerConfig(**json.load(f))
        else:
            config = MindFormerConfig(os.path.realpath(path))
    except (yaml.YAMLError, ValueError) as err:    # MindFormers re-raises YAML errors as ValueError
        kind = "JSON" if path.endswith(".json") else "YAML"
        raise ConfigError(f"config file {path} is not valid {kind}: {err}") from None
    for section in ("model", "runner_config", "context"):
        if section not in config:
            raise ConfigError(f"config file {path} has no '{section}' section")
    if "model_config" not in config.model or "arch" not in config.model:
        raise ConfigError(f"config file {path}: 'model' needs 'model_config' and 'arch'")
    add_default_keys(config)            # init_from_checkpoint, distill, ... (app/train_network.py)
    apply_overrides(config, overrides or {})
    sync_dataset_tasks(config)
    sync_quant_section(config)
    check_lr_schedule(config)
    check_keys(config)
    check_config_values(config)          # out-of-range numbers, named by their YAML path
    return config


def check_lr_schedule(config: MindFormerConfig) -> None:
    """MindFormers 1.9.0's WarmUpStableDecayLR divides by the warmup length: a warmup_ratio that
    rounds to 0 steps (int(total_steps * ratio)) gives a NaN learning rate at step 0, and one NaN
    step turns every weight NaN. Refuse it here with the numbers."""
    lr = config.get("lr_schedule") or {}
    if lr.get("type") != "WarmUpStableDecayLR":
        return
    total, ratio = lr.get("total_steps"), lr.get("warmup_ratio")
    if ratio and isinstance(total, int) and total > 0 and int(total * ratio) == 0:
        raise ConfigError(f"lr_schedule: warmup_ratio={ratio} x total_steps={total} rounds to 0 warmup steps, "
                          "which makes WarmUpStableDecayLR return NaN; raise warmup_ratio or total_steps, "
                          "or set warmup_steps >= 1")


def sync_dataset_tasks(config: MindFormerConfig) -> None:
    """`train_dataset_task.dataset_config: *train_dataset` is one section under two names in the
    YAML; after loading they are copies, so make overrides of `train_dataset` reach the task too."""
    for name in ("train_dataset", "eval_dataset"):
        task = config.get(f"{name}_task")
        if task is not None and config.get(name) is not None:
            task.dataset_config = config[name]


def sync_quant_section(config: MindFormerConfig) -> QuantConfig:
    """Validate `quant:` and make model.model_config.qat_config equal to it (overrides included).

    The group size must divide every quantized projection's input width on each tensor-parallel
    rank (`parallel.check_tp_divisibility`; with model_parallel 1 that is the plain widths)."""
    try:
        qcfg = QuantConfig.from_dict(config.get("quant"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"quant section: {err}") from None
    if qcfg.enabled and config.model.model_config.get("hidden_size"):
        mp = int((config.get("parallel_config") or {}).get("model_parallel") or 1)
        problems = check_tp_divisibility(config.model.model_config, mp, qcfg.group_size)
        if problems:
            raise ConfigError("; ".join(problems))
    config.model.model_config.qat_config = MindFormerConfig(**qcfg.to_dict())
    return qcfg
